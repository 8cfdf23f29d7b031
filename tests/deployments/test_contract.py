"""Every path and method of Mender's deployments API documents is routed by the app."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from services.deployments.config import Settings
from services.deployments.main import create_app

SPEC_DIR: Final = Path("/work/shared/reference/mender-openapi/deployments")
SPECS: Final = (
    "devices_v1.yaml",
    "management_v1.yaml",
    "management_v2.yaml",
    "management_v1alpha1.yaml",
    "internal_v1.yaml",
)
_METHODS: Final = frozenset({"get", "post", "put", "patch", "delete"})
_PARAM: Final = re.compile(r"\{[^}]*\}")


def _normalize(path: str) -> str:
    return _PARAM.sub("{}", path.rstrip("/"))


def _spec_operations(name: str) -> list[tuple[str, str]]:
    document: dict[str, Any] = yaml.safe_load((SPEC_DIR / name).read_text())
    servers = document.get("servers") or [{"url": ""}]
    prefix = re.sub(r"^[a-z]+://[^/]+", "", str(servers[0].get("url", ""))).rstrip("/")
    return [
        (method.upper(), _normalize(prefix + path))
        for path, item in document["paths"].items()
        for method in item
        if method in _METHODS
    ]


@functools.cache
def _routed() -> frozenset[tuple[str, str]]:
    # The app's own OpenAPI document lists every routed path and method.
    app = create_app(Settings(mongo_url="mongodb://127.0.0.1:1", dev_mode=True))
    return frozenset(
        (method.upper(), _normalize(path))
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in _METHODS
    )


@pytest.mark.parametrize("spec", SPECS)
def test_every_operation_is_routed(spec: str) -> None:
    operations = _spec_operations(spec)
    assert operations, f"{spec} lists no operations"
    missing = [op for op in operations if op not in _routed()]
    assert missing == [], f"{spec}: not routed: {missing}"


def test_the_clients_next_endpoints_are_routed() -> None:
    routed = _routed()
    assert ("POST", "/api/devices/v2/deployments/device/deployments/next") in routed
    assert ("POST", "/api/devices/v1/deployments/device/deployments/next") in routed
