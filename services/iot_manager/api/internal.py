"""Internal API: the device lifecycle deviceauth reports, and tenant removal."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Response

from common.core.errors import BadRequest
from common.core.outbox import item_keys
from common.web.routing import TENANT, items
from services.iot_manager.api.deps import EventsAppDep, IdempotencyKey
from services.iot_manager.api.schemas import NewDeviceIn, StatusDeviceIn
from services.iot_manager.models import DeviceEvent

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/internal/v1/iot-manager"
# Statuses deviceauth reports (a dismissed preauthorized device is "decommissioned").
_STATUSES: Final = frozenset(
    {"accepted", "noauth", "pending", "preauthorized", "rejected", "decommissioned"}
)

router = APIRouter(prefix=PREFIX, tags=["internal"])


@router.post(f"/tenants/{TENANT}/devices", status_code=202)
async def provision_device(
    tenant_id: str,
    body: NewDeviceIn | list[NewDeviceIn],
    events: EventsAppDep,
    key: IdempotencyKey = None,
) -> Response:
    """A device was accepted for the first time: provision it to the integrations; or a list
    of them (at most 100), which deviceauth's outbox sends when it merges provisionings (an
    addition to Mender's single device)."""
    devices = [_device_event(d) for d in items(body)]
    await events.provision_devices(tenant_id, devices, keys=item_keys(key, len(devices)))
    return Response(status_code=202)


def _device_event(body: NewDeviceIn) -> DeviceEvent:
    device_id = body.id or body.device_id
    if not device_id:
        raise BadRequest("missing device ID")
    return DeviceEvent(
        id=device_id,
        status=body.status,
        auth_sets=tuple(body.auth_sets),
        created_ts=body.created_ts,
    )


@router.delete(f"/tenants/{TENANT}/devices/{{device_id}}", status_code=202)
async def decommission_device(
    tenant_id: str, device_id: str, events: EventsAppDep, key: IdempotencyKey = None
) -> Response:
    """A device was decommissioned: remove it from the integrations."""
    await events.decommission_device(tenant_id, device_id, key=key)
    return Response(status_code=202)


@router.put(f"/tenants/{TENANT}/bulk/devices/status/{{status}}", status_code=202)
async def bulk_set_device_status(
    tenant_id: str,
    status: str,
    devices: Annotated[list[StatusDeviceIn], Body()],
    events: EventsAppDep,
    key: IdempotencyKey = None,
) -> Response:
    """Devices changed their admission status (at most 100 per request)."""
    if status not in _STATUSES:
        raise BadRequest(f"invalid status '{status}'")
    devices = items(devices)
    # A merged delivery names each item's effect: a redelivery repeats each item's event id.
    keys = item_keys(key, len(devices))
    await events.set_device_statuses(
        tenant_id, status, [(d.id, k) for d, k in zip(devices, keys, strict=True)]
    )
    return Response(status_code=202)


@router.delete(f"/tenants/{TENANT}", status_code=204)
async def delete_tenant(tenant_id: str, events: EventsAppDep) -> Response:
    """Remove every integration, device and event of a tenant."""
    if not tenant_id:
        raise BadRequest("tenant id is empty")
    await events.delete_tenant(tenant_id)
    return Response(status_code=204)
