"""Internal API (v1 and v2): what deviceauth, deployments and devicemonitor call."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Header, Response

from common.web.routing import TENANT
from services.inventory.api.deps import InventoryAppDep
from services.inventory.api.schemas import (
    DeviceGroupsOut,
    DeviceNewIn,
    DeviceOut,
    DeviceStatusIn,
    StatisticsOut,
    TenantNewIn,
)
from services.inventory.models import NewAttribute, SearchParams, UpdateResult

__all__ = ["PREFIX_V1", "PREFIX_V2", "internal_v1", "internal_v2"]

PREFIX_V1: Final = "/api/internal/v1/inventory"
PREFIX_V2: Final = "/api/internal/v2/inventory"

internal_v1 = APIRouter(prefix=PREFIX_V1, tags=["internal"])
internal_v2 = APIRouter(prefix=PREFIX_V2, tags=["internal"])

IfUnmodifiedSince = Annotated[str | None, Header(alias="If-Unmodified-Since")]


@internal_v1.post("/tenants", status_code=201)
async def create_tenant(body: TenantNewIn, inventory: InventoryAppDep) -> Response:
    """Prepare the inventory of a new tenant."""
    await inventory.create_tenant(body.tenant_id)
    return Response(status_code=201)


@internal_v1.post(f"/tenants/{TENANT}/devices", status_code=201)
async def initialize_device(
    tenant_id: str, body: DeviceNewIn, inventory: InventoryAppDep
) -> Response:
    """Create a device with attributes (or merge them into the existing one)."""
    await inventory.create_device(tenant_id, body.id, attributes=body.attributes)
    return Response(status_code=201, headers={"Location": f"devices/{body.id}"})


@internal_v1.delete(f"/tenants/{TENANT}/devices/{{device_id}}", status_code=204)
async def delete_device(tenant_id: str, device_id: str, inventory: InventoryAppDep) -> Response:
    """Remove a device from the inventory."""
    await inventory.delete_device(tenant_id, device_id)
    return Response(status_code=204)


@internal_v1.post(f"/tenants/{TENANT}/devices/status/{{status}}")
async def update_devices_status(
    tenant_id: str,
    status: str,
    devices: Annotated[list[DeviceStatusIn], Body()],
    inventory: InventoryAppDep,
) -> UpdateResult:
    """Record deviceauth's status of devices (older revisions are ignored), and the check-in
    times that came with them."""
    check_ins = {d.id: d.check_in_time for d in devices if d.check_in_time is not None}
    return await inventory.update_statuses(
        tenant_id, status, [(d.id, d.revision) for d in devices], check_ins=check_ins
    )


@internal_v1.patch(f"/tenants/{TENANT}/device/{{device_id}}/attribute/scope/{{scope}}")
async def update_scope_attributes(
    tenant_id: str,
    device_id: str,
    scope: str,
    attributes: list[NewAttribute],
    inventory: InventoryAppDep,
    if_unmodified_since: IfUnmodifiedSince = None,
) -> Response:
    """Add or overwrite attributes of one scope of a device (creating the device)."""
    await inventory.update_attributes(
        tenant_id,
        device_id,
        attributes=attributes,
        scope=scope,
        if_unmodified_since=if_unmodified_since,
    )
    return Response(status_code=200)


@internal_v1.patch(f"/tenants/{TENANT}/device/{{device_id}}/attributes")
async def update_attributes(
    tenant_id: str,
    device_id: str,
    attributes: list[NewAttribute],
    inventory: InventoryAppDep,
    if_unmodified_since: IfUnmodifiedSince = None,
) -> Response:
    """Add or overwrite attributes of a device, each in its own scope (creating the device)."""
    await inventory.update_attributes(
        tenant_id, device_id, attributes=attributes, if_unmodified_since=if_unmodified_since
    )
    return Response(status_code=200)


@internal_v1.get(f"/tenants/{TENANT}/devices/{{device_id}}/groups")
async def get_device_groups(
    tenant_id: str, device_id: str, inventory: InventoryAppDep
) -> DeviceGroupsOut:
    """Return the groups of a device."""
    return DeviceGroupsOut(groups=await inventory.device_groups(tenant_id, device_id))


@internal_v1.post(f"/tenants/{TENANT}/devices/{{device_id}}/reindex")
async def reindex_device(
    tenant_id: str, device_id: str, inventory: InventoryAppDep, service: str | None = None
) -> Response:
    """Refresh a device's monitor attributes from devicemonitor."""
    await inventory.reindex(tenant_id, device_id, service=service)
    return Response(status_code=200)


@internal_v2.get(f"/tenants/{TENANT}/statistics")
async def get_statistics(tenant_id: str, inventory: InventoryAppDep) -> StatisticsOut:
    """Count a tenant's accepted and pending devices per tier."""
    return StatisticsOut(devices_by_status=await inventory.statistics(tenant_id))


@internal_v2.post(f"/tenants/{TENANT}/filters/search")
async def search_devices(
    tenant_id: str,
    response: Response,
    inventory: InventoryAppDep,
    params: Annotated[SearchParams | None, Body()] = None,
) -> list[DeviceOut]:
    """Search a tenant's devices (the v2 search, for peers)."""
    devices, total, _ = await inventory.search_devices(tenant_id, params)
    response.headers["X-Total-Count"] = str(total)
    return [DeviceOut.of(d) for d in devices]
