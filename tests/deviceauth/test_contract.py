"""Contract: every path and method of Mender's deviceauth OpenAPI files is routed, and no more."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from services.deviceauth.config import Settings
from services.deviceauth.main import create_app

_SPECS = (
    Path(__file__).resolve().parents[3] / "shared" / "reference" / "mender-openapi" / "deviceauth"
)
_METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}
_PARAM = re.compile(r"\{[^}]*\}")
_SPEC_FILES = ["devices_v1.yaml", "management_v2.yaml", "internal_v1.yaml"]
# Routed beyond the spec on purpose: the gateway (like Traefik's forward-auth) asks with GET.
_EXTRA: set[tuple[str, str]] = {("GET", "/api/internal/v1/devauth/tokens/verify")}


def _spec_operations(name: str) -> set[tuple[str, str]]:
    spec = yaml.safe_load((_SPECS / name).read_text())
    servers = spec.get("servers") or [{"url": ""}]
    prefix = urlparse(servers[0]["url"]).path.rstrip("/")
    return {
        (method.upper(), prefix + path)
        for path, item in spec["paths"].items()
        for method in item
        if method in _METHODS
    }


def _app_operations() -> set[tuple[str, str]]:
    # The app's own OpenAPI document lists every routed path and method.
    app = create_app(Settings(mongo_url="mongodb://unused", dev_mode=True))
    return {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in _METHODS
    }


def _covers(route_path: str, spec_path: str) -> bool:
    """Whether an app path template serves a spec path (a parameter serves any segment)."""
    ours, theirs = route_path.split("/"), spec_path.split("/")
    return len(ours) == len(theirs) and all(
        a == b or _PARAM.fullmatch(a) is not None for a, b in zip(ours, theirs, strict=True)
    )


@pytest.mark.parametrize("spec", _SPEC_FILES)
def test_every_operation_is_routed(spec: str) -> None:
    expected = _spec_operations(spec)
    assert expected, f"{spec} lists no operations"
    routed = _app_operations()
    missing = {
        (method, path)
        for method, path in expected
        if not any(m == method and _covers(template, path) for m, template in routed)
    }
    assert not missing, f"not routed: {sorted(missing)}"


def test_no_route_outside_the_contract() -> None:
    documented = set().union(*(_spec_operations(name) for name in _SPEC_FILES)) | _EXTRA
    extra = {
        (method, template)
        for method, template in _app_operations()
        if not any(m == method and _covers(template, path) for m, path in documented)
    }
    assert extra == set()


def test_spec_files_are_all_covered() -> None:
    assert sorted(p.name for p in _SPECS.glob("*.yaml")) == sorted(_SPEC_FILES)
