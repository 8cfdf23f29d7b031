"""Builders of the effects deviceauth sends to its peers (the calls Mender's workflows make).

Effects are recorded in the outbox together with the change that causes them and delivered
by the relay; every path carries the tenant, which is empty on single-tenant installs. The
device id is each effect's lane (a device's effects reach a peer in order, different devices
in parallel), and the status changes and provisionings, whose targets take lists, are
merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from common.core.audit import Actor, AuditObject, audit_event
from common.core.outbox import Effect
from services.deviceauth.models import AuthSet, AuthStatus, Device

__all__ = [
    "DEPLOYMENTS",
    "DEVICECONFIG",
    "DEVICECONNECT",
    "DEVICEMONITOR",
    "INVENTORY",
    "IOT_MANAGER",
    "decommission_effects",
    "device_audit",
    "deviceconnect_disconnect",
    "dismissal_effects",
    "inventory_check_in",
    "inventory_identity",
    "provision_effects",
    "status_effects",
]

INVENTORY: Final = "inventory"
DEPLOYMENTS: Final = "deployments"
DEVICECONNECT: Final = "deviceconnect"
DEVICECONFIG: Final = "deviceconfig"
IOT_MANAGER: Final = "iot_manager"
DEVICEMONITOR: Final = "devicemonitor"

_INVENTORY: Final = "/api/internal/v1/inventory/tenants"
_DEPLOYMENTS: Final = "/api/internal/v1/deployments/tenants"
_DEVICECONNECT: Final = "/api/internal/v1/deviceconnect/tenants"
_DEVICECONFIG: Final = "/api/internal/v1/deviceconfig/tenants"
_IOT_MANAGER: Final = "/api/internal/v1/iot-manager/tenants"
_DEVICEMONITOR: Final = "/api/internal/v1/devicemonitor/tenants"
# A device deleted before it was ever accepted is reported to iot-manager with this status.
_DISMISSED: Final = "decommissioned"


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
        lane=device_id,
    )


def _inventory_status(
    tenant_id: str, device_id: str, *, status: str, revision: int, check_in: datetime | None
) -> Effect:
    """Tell inventory the device's admission status (ignored there if `revision` is stale),
    and its check-in time if the change came with one (the one write of both there)."""
    item: dict[str, Any] = {"id": device_id, "revision": revision}
    if check_in is not None:
        item["check_in_time"] = _rfc3339(check_in)
    return Effect(
        peer=INVENTORY,
        method="POST",
        path=f"{_INVENTORY}/{_seg(tenant_id)}/devices/status/{_seg(status)}",
        body=[item],
        lane=device_id,
        merge=True,
    )


def _iot_manager_status(tenant_id: str, device_id: str, *, status: str) -> Effect:
    """Tell iot-manager the device's new admission status (a status-changed event)."""
    return Effect(
        peer=IOT_MANAGER,
        method="PUT",
        path=f"{_IOT_MANAGER}/{_seg(tenant_id)}/bulk/devices/status/{_seg(status)}",
        body=[{"id": device_id}],
        ok=(200, 201, 202, 204, 404),
        lane=device_id,
        merge=True,
    )


def status_effects(
    tenant_id: str,
    device_id: str,
    *,
    status: str,
    revision: int,
    check_in: datetime | None = None,
) -> list[Effect]:
    """The device's admission status changed (with a check-in at `check_in`, if given): tell
    inventory and iot-manager."""
    return [
        _inventory_status(
            tenant_id, device_id, status=status, revision=revision, check_in=check_in
        ),
        _iot_manager_status(tenant_id, device_id, status=status),
    ]


def inventory_check_in(tenant_id: str, device_id: str, when: datetime) -> Effect:
    """Publish the device's last check-in time in its `system` scope."""
    return Effect(
        peer=INVENTORY,
        method="PATCH",
        path=f"{_INVENTORY}/{_seg(tenant_id)}/device/{_seg(device_id)}/attribute/scope/system",
        body=[{"name": "check_in_time", "value": _rfc3339(when), "scope": "system"}],
        lane=device_id,
    )


def _inventory_delete_device(tenant_id: str, device_id: str) -> Effect:
    """Remove the device from inventory."""
    return Effect(
        peer=INVENTORY,
        method="DELETE",
        path=f"{_INVENTORY}/{_seg(tenant_id)}/devices/{_seg(device_id)}",
        ok=(200, 202, 204, 404),
        lane=device_id,
    )


def dismissal_effects(tenant_id: str, device_id: str) -> list[Effect]:
    """A device that was never accepted is gone: inventory drops it, iot-manager hears so."""
    return [
        _inventory_delete_device(tenant_id, device_id),
        _iot_manager_status(tenant_id, device_id, status=_DISMISSED),
    ]


def _device_event(device: Device, auth_set: AuthSet) -> dict[str, Any]:
    """The device as iot-manager's webhooks show it: accepted, with its accepted key."""
    return {
        "id": device.id,
        "status": "accepted",
        "created_ts": _rfc3339(device.created_ts),
        "auth_sets": [
            {
                "id": auth_set.id,
                "device_id": auth_set.device_id,
                "identity_data": auth_set.identity_data,
                "pubkey": auth_set.pubkey,
                "status": "accepted",
                "ts": _rfc3339(auth_set.ts),
            }
        ],
    }


def provision_effects(tenant_id: str, device: Device, auth_set: AuthSet) -> list[Effect]:
    """Register a device accepted for the first time (with `auth_set`) with the peers."""
    device_id = device.id
    # deviceconnect, deviceconfig and iot-manager take a list too: provisionings of devices
    # go together.
    body = [{"device_id": device_id}]
    return [
        Effect(
            peer=DEVICECONNECT,
            method="POST",
            path=f"{_DEVICECONNECT}/{_seg(tenant_id)}/devices",
            body=body,
            ok=(200, 201, 204, 409),
            lane=device_id,
            merge=True,
        ),
        Effect(
            peer=DEVICECONFIG,
            method="POST",
            path=f"{_DEVICECONFIG}/{_seg(tenant_id)}/devices",
            body=body,
            ok=(200, 201, 204, 409),
            lane=device_id,
            merge=True,
        ),
        Effect(
            peer=IOT_MANAGER,
            method="POST",
            path=f"{_IOT_MANAGER}/{_seg(tenant_id)}/devices",
            body=[_device_event(device, auth_set)],
            ok=(200, 201, 202, 204, 409),
            lane=device_id,
            merge=True,
        ),
    ]


def deviceconnect_disconnect(tenant_id: str, device_id: str) -> Effect:
    """Cut the remote-access connection of a device that is no longer accepted."""
    return Effect(
        peer=DEVICECONNECT,
        method="POST",
        path=f"{_DEVICECONNECT}/{_seg(tenant_id)}/devices/{_seg(device_id)}/disconnect",
        ok=(200, 202, 204, 404),
        lane=device_id,
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
            lane=device_id,
        ),
        Effect(
            peer=DEVICECONNECT,
            method="DELETE",
            path=f"{_DEVICECONNECT}/{tid}/devices/{did}",
            ok=(200, 202, 204, 404),
            lane=device_id,
        ),
        Effect(
            peer=DEVICECONFIG,
            method="DELETE",
            path=f"{_DEVICECONFIG}/{tid}/devices/{did}",
            ok=(200, 204, 404),
            lane=device_id,
        ),
        Effect(
            peer=IOT_MANAGER,
            method="DELETE",
            path=f"{_IOT_MANAGER}/{tid}/devices/{did}",
            ok=(200, 202, 204, 404),
            lane=device_id,
        ),
        Effect(
            peer=DEVICEMONITOR,
            method="DELETE",
            path=f"{_DEVICEMONITOR}/{tid}/devices/{did}",
            ok=(200, 204, 404),
            lane=device_id,
        ),
        _inventory_delete_device(tenant_id, device_id),
    ]


def device_audit(
    tenant_id: str,
    actor: Actor | None,
    action: str,
    subject: AuthSet | Device,
    *,
    when: datetime,
    status: AuthStatus | None = None,
) -> list[Effect]:
    """The audit event of an operator's change to a device (none without an operator).

    The change names the auth set acted on, and the status it was given if not implied.
    """
    if actor is None:
        return []
    device_id, change = subject.id, ""
    if isinstance(subject, AuthSet):
        device_id, change = subject.device_id, f"auth set {subject.id}"
        if status is not None:
            change += f" set to {status.value}"
    return [
        audit_event(
            tenant_id,
            actor=actor,
            action=action,
            object_=AuditObject.device(device_id, subject.id_data),
            change=change,
            when=when,
        )
    ]
