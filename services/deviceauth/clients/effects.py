"""Builders of the effects deviceauth sends to its peers (the calls Mender's workflows make).

Effects are recorded in the outbox together with the change that causes them and delivered
by the relay; every path carries the tenant, which is empty on single-tenant installs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from common.outbox import Effect

__all__ = [
    "DEPLOYMENTS",
    "DEVICECONFIG",
    "DEVICECONNECT",
    "INVENTORY",
    "decommission_effects",
    "deviceconnect_disconnect",
    "inventory_check_in",
    "inventory_delete_device",
    "inventory_identity",
    "inventory_status",
    "provision_effects",
]

INVENTORY: Final = "inventory"
DEPLOYMENTS: Final = "deployments"
DEVICECONNECT: Final = "deviceconnect"
DEVICECONFIG: Final = "deviceconfig"

_INVENTORY: Final = "/api/internal/v1/inventory/tenants"
_DEPLOYMENTS: Final = "/api/internal/v1/deployments/tenants"
_DEVICECONNECT: Final = "/api/internal/v1/deviceconnect/tenants"
_DEVICECONFIG: Final = "/api/internal/v1/deviceconfig/tenants"


def _seg(value: str) -> str:
    return quote(value, safe="")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def inventory_identity(tenant_id: str, device_id: str, identity: Mapping[str, Any]) -> Effect:
    """Publish the identity data as the device's `identity` scope in inventory."""
    # `status` in the identity scope belongs to deviceauth's admission status.
    attributes = [
        {"name": name, "value": value, "scope": "identity"}
        for name, value in identity.items()
        if name != "status"
    ]
    return Effect(
        peer=INVENTORY,
        method="PATCH",
        path=f"{_INVENTORY}/{_seg(tenant_id)}/device/{_seg(device_id)}/attribute/scope/identity",
        body=attributes,
    )


def inventory_status(tenant_id: str, device_id: str, *, status: str, revision: int) -> Effect:
    """Tell inventory the device's admission status (ignored there if `revision` is stale)."""
    return Effect(
        peer=INVENTORY,
        method="POST",
        path=f"{_INVENTORY}/{_seg(tenant_id)}/devices/status/{_seg(status)}",
        body=[{"id": device_id, "revision": revision}],
    )


def inventory_check_in(tenant_id: str, device_id: str, when: datetime) -> Effect:
    """Publish the device's last check-in time in its `system` scope."""
    return Effect(
        peer=INVENTORY,
        method="PATCH",
        path=f"{_INVENTORY}/{_seg(tenant_id)}/device/{_seg(device_id)}/attribute/scope/system",
        body=[{"name": "check_in_time", "value": _rfc3339(when), "scope": "system"}],
    )


def inventory_delete_device(tenant_id: str, device_id: str) -> Effect:
    """Remove the device from inventory."""
    return Effect(
        peer=INVENTORY,
        method="DELETE",
        path=f"{_INVENTORY}/{_seg(tenant_id)}/devices/{_seg(device_id)}",
        ok=(200, 202, 204, 404),
    )


def provision_effects(tenant_id: str, device_id: str) -> list[Effect]:
    """Register a newly accepted device with deviceconnect and deviceconfig."""
    body = {"device_id": device_id}
    return [
        Effect(
            peer=DEVICECONNECT,
            method="POST",
            path=f"{_DEVICECONNECT}/{_seg(tenant_id)}/devices",
            body=body,
            ok=(200, 201, 204, 409),
        ),
        Effect(
            peer=DEVICECONFIG,
            method="POST",
            path=f"{_DEVICECONFIG}/{_seg(tenant_id)}/devices",
            body=body,
            ok=(200, 201, 204, 409),
        ),
    ]


def deviceconnect_disconnect(tenant_id: str, device_id: str) -> Effect:
    """Cut the remote-access connection of a device that is no longer accepted."""
    return Effect(
        peer=DEVICECONNECT,
        method="POST",
        path=f"{_DEVICECONNECT}/{_seg(tenant_id)}/devices/{_seg(device_id)}/disconnect",
        ok=(200, 202, 204, 404),
    )


def decommission_effects(tenant_id: str, device_id: str) -> list[Effect]:
    """Remove a decommissioned device from every peer that knows it."""
    tid, did = _seg(tenant_id), _seg(device_id)
    return [
        Effect(
            peer=DEPLOYMENTS,
            method="DELETE",
            path=f"{_DEPLOYMENTS}/{tid}/deployments/devices/{did}",
            ok=(200, 204, 404),
        ),
        Effect(
            peer=DEVICECONNECT,
            method="DELETE",
            path=f"{_DEVICECONNECT}/{tid}/devices/{did}",
            ok=(200, 202, 204, 404),
        ),
        Effect(
            peer=DEVICECONFIG,
            method="DELETE",
            path=f"{_DEVICECONFIG}/{tid}/devices/{did}",
            ok=(200, 204, 404),
        ),
        inventory_delete_device(tenant_id, device_id),
    ]
