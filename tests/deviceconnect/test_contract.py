"""Contract: every path and method of Mender's deviceconnect API is routed.

`spec_operations.json` lists the operations of the devices, management and internal
deviceconnect specifications (method and path); websocket endpoints are GET operations
there and are routed here as websockets, with a plain GET answering 400.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from starlette.routing import WebSocketRoute

from services.deviceconnect.api import devices, internal, management
from services.deviceconnect.config import Settings
from services.deviceconnect.main import create_app

_SPEC = json.loads((Path(__file__).parent / "spec_operations.json").read_text())
_PARAM = re.compile(r"\{[^}:]*(:[^}]*)?\}")


def _normalize(path: str) -> str:
    return _PARAM.sub("{}", path.rstrip("/"))


def _routed() -> tuple[set[str], set[str]]:
    app = create_app(Settings(mongo_url="mongodb://unused", dev_mode=True))
    http = {
        f"{method.upper()} {_normalize(path)}"
        for path, item in app.openapi()["paths"].items()
        for method in item
    }
    websockets = {
        _normalize(route.path)
        for router in (devices.router, management.router, internal.router)
        for route in router.routes
        if isinstance(route, WebSocketRoute)
    }
    return http, websockets


@pytest.mark.parametrize("spec", sorted(_SPEC))
def test_every_operation_is_routed(spec: str) -> None:
    http, _ = _routed()
    expected = {f"{op.split()[0]} {_normalize(op.split()[1])}" for op in _SPEC[spec]}
    assert expected, f"{spec} lists no operations"
    assert not expected - http, f"not routed: {sorted(expected - http)}"


def test_websocket_endpoints() -> None:
    _, websockets = _routed()
    assert websockets == {
        "/api/devices/v1/deviceconnect/connect",
        "/api/management/v1/deviceconnect/devices/{}/connect",
        "/api/management/v1/deviceconnect/sessions/{}/playback",
    }


def test_no_route_outside_the_contract() -> None:
    http, _ = _routed()
    documented = {
        f"{op.split()[0]} {_normalize(op.split()[1])}" for ops in _SPEC.values() for op in ops
    }
    # Fleetport's own: deviceauth cuts the connection of a device no longer accepted.
    extra = {"POST /api/internal/v1/deviceconnect/tenants/{}/devices/{}/disconnect"}
    assert http - documented == extra
