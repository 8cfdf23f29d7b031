"""Contract: every path and method of Mender's inventory OpenAPI files is routed."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from services.inventory.config import Settings
from services.inventory.main import create_app

_SPECS = Path("/work/shared/reference/mender-openapi/inventory")
_METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}
_PARAM = re.compile(r"\{[^}]*\}")


def _normalize(path: str) -> str:
    return _PARAM.sub("{}", path.rstrip("/") or "/")


@functools.cache
def _spec_operations(name: str) -> frozenset[tuple[str, str]]:
    spec = yaml.safe_load((_SPECS / name).read_text())
    servers = spec.get("servers") or [{"url": ""}]
    prefix = urlparse(servers[0]["url"]).path.rstrip("/")
    return frozenset(
        (method.upper(), _normalize(prefix + path))
        for path, item in spec["paths"].items()
        for method in item
        if method in _METHODS
    )


@functools.cache
def _app_operations() -> frozenset[tuple[str, str]]:
    # The app's own OpenAPI document lists every routed path and method.
    app = create_app(Settings(mongo_url="mongodb://unused", dev_mode=True))
    return frozenset(
        (method.upper(), _normalize(path))
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in _METHODS
    )


@pytest.mark.parametrize(
    "spec",
    [
        "devices_v1.yaml",
        "management_v1.yaml",
        "management_v2.yaml",
        "management_v2alpha1.yaml",
        "internal_v1.yaml",
        "internal_v2.yaml",
    ],
)
def test_every_operation_is_routed(spec: str) -> None:
    expected = _spec_operations(spec)
    assert expected, f"{spec} lists no operations"
    missing = expected - _app_operations()
    assert not missing, f"not routed: {sorted(missing)}"


def test_no_route_outside_the_contract() -> None:
    specs = sorted(p.name for p in _SPECS.glob("*.yaml") if p.name != "schemas.yaml")
    documented = frozenset().union(*(_spec_operations(name) for name in specs))
    assert _app_operations() - documented == set()
