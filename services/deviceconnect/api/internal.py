"""Internal API (`/api/internal/v1/deviceconnect`): what deviceauth and other peers call."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from common.web.routing import TENANT, items
from services.deviceconnect.api.deps import (
    ConnectionsDep,
    DevicesAppDep,
    SessionsAppDep,
    SettingsDep,
)
from services.deviceconnect.api.schemas import ProvisionDeviceIn

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/internal/v1/deviceconnect"

router = APIRouter(prefix=PREFIX, tags=["internal"])


@router.get("/shutdown", status_code=202)
async def shutdown(connections: ConnectionsDep, settings: SettingsDep) -> Response:
    """Drain: refuse new websockets and close the open ones over the drain period."""
    connections.start_drain(settings.shutdown_drain.total_seconds())
    return Response(status_code=202)


@router.delete(f"/tenants/{TENANT}", status_code=204)
async def delete_tenant(tenant_id: str, devices: DevicesAppDep) -> Response:
    """Delete all of a tenant's data and cut its devices' connections."""
    await devices.delete_tenant(tenant_id)
    return Response(status_code=204)


@router.post(f"/tenants/{TENANT}/devices", status_code=201)
async def provision_device(
    tenant_id: str, body: ProvisionDeviceIn | list[ProvisionDeviceIn], devices: DevicesAppDep
) -> Response:
    """Know a newly accepted device (idempotent); or a list of them, which deviceauth's
    outbox sends when it merges provisionings (an addition to Mender's single device)."""
    await devices.provision(tenant_id, [d.device_id for d in items(body)])
    return Response(status_code=201)


@router.delete(f"/tenants/{TENANT}/devices/{{device_id}}", status_code=202)
async def decommission_device(tenant_id: str, device_id: str, devices: DevicesAppDep) -> Response:
    """Forget a decommissioned device and cut its connection at once."""
    await devices.decommission(tenant_id, device_id)
    return Response(status_code=202)


# NOTE: not in Mender's API: deviceauth calls it when a device stops being accepted, so that
# its open connection is cut at once (Mender leaves it open until the device reconnects).
@router.post(f"/tenants/{TENANT}/devices/{{device_id}}/disconnect", status_code=202)
async def disconnect_device(tenant_id: str, device_id: str, devices: DevicesAppDep) -> Response:
    """Cut the connection of a device that is no longer accepted."""
    await devices.disconnect(tenant_id, device_id)
    return Response(status_code=202)


@router.post(f"/tenants/{TENANT}/devices/{{device_id}}/check-update", status_code=202)
async def check_update(tenant_id: str, device_id: str, sessions: SessionsAppDep) -> JSONResponse:
    """Have the device's Mender client check for an update now."""
    await sessions.command(tenant_id, device_id, "check-update", user_id=None)
    return JSONResponse(None, status_code=202)


@router.post(f"/tenants/{TENANT}/devices/{{device_id}}/send-inventory", status_code=202)
async def send_inventory(tenant_id: str, device_id: str, sessions: SessionsAppDep) -> JSONResponse:
    """Have the device's Mender client send its inventory now."""
    await sessions.command(tenant_id, device_id, "send-inventory", user_id=None)
    return JSONResponse(None, status_code=202)
