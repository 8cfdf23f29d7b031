"""Contract: every path and method of Mender's useradm OpenAPI files is routed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final
from urllib.parse import urlparse

import pytest
import yaml

from services.useradm.config import Settings
from services.useradm.main import create_app

_SPECS: Final = Path("/work/shared/reference/mender-openapi/useradm")
_FILES: Final = ("management_v1.yaml", "management_v2.yaml", "internal_v1.yaml")
_METHODS: Final = {"get", "put", "post", "patch", "delete", "head", "options"}
_PARAM: Final = re.compile(r"\{[^}]*\}")
# Routed beyond the files: Mender registers the verify endpoint for GET too, which is what
# a forward-auth gateway sends.
_EXTRA: Final = {("GET", "/api/internal/v1/useradm/auth/verify")}


def _normalize(path: str) -> str:
    return _PARAM.sub("{}", path.rstrip("/") or "/")


def _spec_operations(name: str) -> set[tuple[str, str]]:
    spec = yaml.safe_load((_SPECS / name).read_text())
    servers = spec.get("servers") or [{"url": ""}]
    prefix = urlparse(servers[0]["url"]).path.rstrip("/")
    return {
        (method.upper(), _normalize(prefix + path))
        for path, item in spec["paths"].items()
        for method in item
        if method in _METHODS
    }


def _app_operations() -> set[tuple[str, str]]:
    app = create_app(Settings(mongo_url="mongodb://unused", dev_mode=True))
    return {
        (method.upper(), _normalize(path))
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in _METHODS
    }


@pytest.mark.parametrize("spec", _FILES)
def test_every_operation_is_routed(spec: str) -> None:
    expected = _spec_operations(spec)
    assert expected, f"{spec} lists no operations"
    missing = expected - _app_operations()
    assert not missing, f"not routed: {sorted(missing)}"


def test_no_route_outside_the_contract() -> None:
    documented = set().union(*(_spec_operations(name) for name in _FILES))
    assert _app_operations() - documented == _EXTRA


def test_every_route_is_described() -> None:
    app = create_app(Settings(mongo_url="mongodb://unused", dev_mode=True))
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            assert operation.get("description"), f"{method.upper()} {path} has no docstring"
