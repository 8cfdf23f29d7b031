"""Each service routes every operation of its Mender documents, and nothing undocumented."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import pytest
from fastapi import FastAPI

from services.auditlogs.config import Settings as AuditlogsSettings
from services.auditlogs.main import create_app as auditlogs_app
from services.deployments.config import Settings as DeploymentsSettings
from services.deployments.main import create_app as deployments_app
from services.deviceauth.config import Settings as DeviceauthSettings
from services.deviceauth.main import create_app as deviceauth_app
from services.deviceconfig.config import Settings as DeviceconfigSettings
from services.deviceconfig.main import create_app as deviceconfig_app
from services.deviceconnect.config import Settings as DeviceconnectSettings
from services.deviceconnect.main import create_app as deviceconnect_app
from services.devicemonitor.config import Settings as DevicemonitorSettings
from services.devicemonitor.main import create_app as devicemonitor_app
from services.inventory.config import Settings as InventorySettings
from services.inventory.main import create_app as inventory_app
from services.iot_manager.config import Settings as IotManagerSettings
from services.iot_manager.main import create_app as iot_manager_app
from services.useradm.config import Settings as UseradmSettings
from services.useradm.main import create_app as useradm_app
from tests.contract.facts import Operation, app_operations, covers, documents, operations

# Building an app connects to nothing; the URL is never dialled.
_NO_DB: Final = "mongodb://unused"

Route = tuple[str, str]


@dataclass(frozen=True)
class _Service:
    """How to build a service's app and where it departs from its documents on purpose."""

    build: Callable[[], FastAPI]
    # Routed although no document lists them.
    undocumented: frozenset[Route] = field(default_factory=frozenset)
    # Documented success statuses that Mender's own handlers do not answer.
    other_success: dict[Route, str] = field(default_factory=dict)


SERVICES: Final = {
    "auditlogs": _Service(
        lambda: auditlogs_app(AuditlogsSettings(mongo_url=_NO_DB, dev_mode=True)),
    ),
    "deployments": _Service(
        lambda: deployments_app(DeploymentsSettings(mongo_url=_NO_DB, dev_mode=True)),
        undocumented=frozenset(
            {
                # The device client 3.x asks for its next deployment with POST and a body.
                ("POST", "/api/devices/v1/deployments/device/deployments/next"),
                ("POST", "/api/devices/v2/deployments/device/deployments/next"),
                # The local storage's signed links: download, and direct upload.
                ("GET", "/api/devices/v1/deployments/download/objects/{}"),
                ("PUT", "/api/devices/v1/deployments/download/objects/{}"),
            }
        ),
    ),
    "deviceauth": _Service(
        lambda: deviceauth_app(DeviceauthSettings(mongo_url=_NO_DB, dev_mode=True)),
        # A forward-auth gateway asks with GET.
        undocumented=frozenset({("GET", "/api/internal/v1/devauth/tokens/verify")}),
        # The document says 201; Mender's handler answers 204 No Content.
        other_success={("DELETE", "/api/internal/v1/devauth/tenants/{}/devices/{}"): "204"},
    ),
    "deviceconfig": _Service(
        lambda: deviceconfig_app(DeviceconfigSettings(mongo_url=_NO_DB, dev_mode=True)),
        # Mender's deviceconfig routes this internal update without documenting it.
        undocumented=frozenset(
            {("PATCH", "/api/internal/v1/deviceconfig/tenants/{}/configurations/device/{}")}
        ),
    ),
    "deviceconnect": _Service(
        lambda: deviceconnect_app(DeviceconnectSettings(mongo_url=_NO_DB, dev_mode=True)),
        # deviceauth cuts the connection of a device that is no longer accepted.
        undocumented=frozenset(
            {("POST", "/api/internal/v1/deviceconnect/tenants/{}/devices/{}/disconnect")}
        ),
    ),
    "devicemonitor": _Service(
        lambda: devicemonitor_app(DevicemonitorSettings(mongo_url=_NO_DB, dev_mode=True)),
        undocumented=frozenset(
            {
                # inventory reads a device's open alerts when devicemonitor asks it to reindex.
                ("GET", "/api/internal/v1/devicemonitor/tenants/{}/devices/{}/alerts/latest"),
                # A decommissioned device's alerts and configuration go with it.
                ("DELETE", "/api/internal/v1/devicemonitor/tenants/{}/devices/{}"),
                # Health checks, as every service has.
                ("GET", "/api/internal/v1/devicemonitor/health"),
                ("GET", "/api/internal/v1/devicemonitor/alive"),
                # Telemetry, beyond Mender: samples in, latest, ranges, a stream, thresholds.
                ("POST", "/api/devices/v1/devicemonitor/telemetry"),
                ("GET", "/api/management/v1/devicemonitor/devices/{}/telemetry"),
                ("GET", "/api/management/v1/devicemonitor/devices/{}/telemetry/latest"),
                ("GET", "/api/management/v1/devicemonitor/devices/{}/telemetry/stream"),
                ("GET", "/api/management/v1/devicemonitor/telemetry/thresholds"),
                ("PUT", "/api/management/v1/devicemonitor/telemetry/thresholds"),
            }
        ),
    ),
    "inventory": _Service(
        lambda: inventory_app(InventorySettings(mongo_url=_NO_DB, dev_mode=True)),
    ),
    "iot-manager": _Service(
        lambda: iot_manager_app(IotManagerSettings(mongo_url=_NO_DB, dev_mode=True), environ={}),
        # Mender routes GET of one integration too, though its document leaves it out.
        undocumented=frozenset({("GET", "/api/management/v1/iot-manager/integrations/{}")}),
    ),
    "useradm": _Service(
        lambda: useradm_app(UseradmSettings(mongo_url=_NO_DB, dev_mode=True)),
        undocumented=frozenset(
            {
                # Mender registers the verify endpoint for GET too: what a forward-auth
                # gateway sends.
                ("GET", "/api/internal/v1/useradm/auth/verify"),
                # The web UI's Enterprise mode: the roles (Mender's RBAC) and the caller's
                # organization (Mender's tenantadm, which Fleetport has not).
                ("GET", "/api/management/v1/useradm/roles"),
                ("GET", "/api/management/v1/tenantadm/user/tenant"),
            }
        ),
    ),
}
DOCUMENTS: Final = [(service, document) for service in SERVICES for document in documents(service)]


@functools.cache
def _routed(service: str) -> dict[Route, dict[str, object]]:
    return app_operations(SERVICES[service].build())


def _route_of(op: Operation) -> Route | None:
    """The app's route serving a documented operation: the same path, or a template over it."""
    routed = _routed(op.service)
    method, path = op.route
    if (method, path) in routed:
        return method, path
    return next((r for r in routed if r[0] == method and covers(r[1], path)), None)


@pytest.mark.parametrize(("service", "document"), DOCUMENTS)
def test_every_operation_is_routed(service: str, document: str) -> None:
    documented = operations(service, document)
    assert documented, f"{service}/{document} lists no operations"
    missing = [str(op) for op in documented if _route_of(op) is None]
    assert missing == [], "not routed"


@pytest.mark.parametrize(("service", "document"), DOCUMENTS)
def test_success_status_is_a_documented_one(service: str, document: str) -> None:
    expected = SERVICES[service].other_success
    wrong = []
    for op in operations(service, document):
        route = _route_of(op)
        assert route is not None, f"{op} is not routed"
        responses = _routed(service)[route]["responses"]
        assert isinstance(responses, dict)
        ours = {code for code in responses if code.startswith("2")}
        documented = {code for code in op.responses if code.startswith("2")}
        allowed = {expected[route]} if route in expected else documented
        if not ours <= allowed:
            wrong.append(f"{op}: answers {sorted(ours)}, documented {sorted(documented)}")
    assert wrong == []


@pytest.mark.parametrize("service", SERVICES)
def test_no_route_outside_the_contract(service: str) -> None:
    documented = [op.route for op in operations(service)]
    routed = {
        (method, template)
        for method, template in _routed(service)
        if any(m == method and covers(template, path) for m, path in documented)
    }
    assert set(_routed(service)) - routed == SERVICES[service].undocumented


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_is_described(service: str) -> None:
    bare = [
        route for route, operation in _routed(service).items() if not operation.get("description")
    ]
    assert bare == [], "routes without a docstring"
