"""Management API v1: device inventories, tags and groups."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Header, Request, Response
from pydantic import StrictStr

from common.web.paging import PageDep, set_page_headers
from services.inventory.api.deps import InventoryAppDep, UserIdentity
from services.inventory.api.schemas import DeviceGroupOut, DeviceOut, GroupIn
from services.inventory.models import NewAttribute, UpdateResult

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v1/inventory"

router = APIRouter(prefix=PREFIX, tags=["management"])

IfMatch = Annotated[str | None, Header(alias="If-Match")]
DeviceIds = Annotated[list[StrictStr], Body()]


@router.get("/devices")
async def get_devices(
    request: Request,
    response: Response,
    identity: UserIdentity,
    inventory: InventoryAppDep,
    page: PageDep,
) -> list[DeviceOut]:
    """List devices, filtered by `[scope/]attribute=value` query parameters and sorted."""
    devices, total = await inventory.list_devices(
        identity.tenant, params=request.query_params.multi_items(), page=page
    )
    set_page_headers(request, response, page, total=total)
    return [DeviceOut.of(d) for d in devices]


@router.get("/devices/{id}")
async def get_device(
    id: str, response: Response, identity: UserIdentity, inventory: InventoryAppDep
) -> DeviceOut:
    """Return one device's inventory, with its tags ETag."""
    device = await inventory.get_device(identity.tenant, id)
    if device.tags_etag:
        response.headers["ETag"] = device.tags_etag
    return DeviceOut.of(device)


@router.delete("/devices/{id}", status_code=204)
async def delete_device_inventory(
    id: str, identity: UserIdentity, inventory: InventoryAppDep
) -> Response:
    """Remove the device-reported attributes of a device."""
    await inventory.clear_inventory(identity.tenant, id)
    return Response(status_code=204)


@router.put("/devices/{id}/tags", status_code=200)
async def assign_tags(
    id: str,
    tags: list[NewAttribute],
    identity: UserIdentity,
    inventory: InventoryAppDep,
    if_match: IfMatch = None,
) -> Response:
    """Replace a device's tags (412 when `If-Match` is not the current ETag)."""
    await inventory.update_tags(identity.tenant, id, tags=tags, replace=True, if_match=if_match)
    return Response(status_code=200)


@router.patch("/devices/{id}/tags", status_code=200)
async def add_tags(
    id: str,
    tags: list[NewAttribute],
    identity: UserIdentity,
    inventory: InventoryAppDep,
    if_match: IfMatch = None,
) -> Response:
    """Add or overwrite tags of a device (412 when `If-Match` is not the current ETag)."""
    await inventory.update_tags(identity.tenant, id, tags=tags, replace=False, if_match=if_match)
    return Response(status_code=200)


@router.get("/devices/{id}/group")
async def get_device_group(
    id: str, identity: UserIdentity, inventory: InventoryAppDep
) -> DeviceGroupOut:
    """Return a device's group (null when it has none)."""
    return DeviceGroupOut(group=await inventory.get_device_group(identity.tenant, id))


@router.put("/devices/{id}/group", status_code=204)
async def assign_group(
    id: str, body: GroupIn, identity: UserIdentity, inventory: InventoryAppDep
) -> Response:
    """Move a device into a group."""
    await inventory.assign_group(identity.tenant, id, body.group)
    return Response(status_code=204)


@router.delete("/devices/{id}/group/{name}", status_code=204)
async def clear_group(
    id: str, name: str, identity: UserIdentity, inventory: InventoryAppDep
) -> Response:
    """Take a device out of a group."""
    await inventory.clear_group(identity.tenant, id, name)
    return Response(status_code=204)


@router.get("/groups")
async def list_groups(
    identity: UserIdentity, inventory: InventoryAppDep, status: str | None = None
) -> list[str]:
    """List the groups in use, optionally among devices with an auth status."""
    return await inventory.list_groups(identity.tenant, status=status)


@router.delete("/groups/{name}")
async def delete_group(
    name: str, identity: UserIdentity, inventory: InventoryAppDep
) -> UpdateResult:
    """Remove a group from all its devices."""
    return await inventory.delete_group(identity.tenant, name)


@router.get("/groups/{name}/devices")
async def get_devices_in_group(
    name: str,
    request: Request,
    response: Response,
    identity: UserIdentity,
    inventory: InventoryAppDep,
    page: PageDep,
) -> list[str]:
    """List the ids of a group's devices."""
    ids, total = await inventory.list_group_devices(identity.tenant, name, page=page)
    set_page_headers(request, response, page, total=total)
    return ids


@router.patch("/groups/{name}/devices")
async def add_devices_to_group(
    name: str, device_ids: DeviceIds, identity: UserIdentity, inventory: InventoryAppDep
) -> UpdateResult:
    """Move the listed devices into a group."""
    return await inventory.add_devices_to_group(identity.tenant, name, device_ids)


@router.delete("/groups/{name}/devices")
async def remove_devices_from_group(
    name: str, device_ids: DeviceIds, identity: UserIdentity, inventory: InventoryAppDep
) -> UpdateResult:
    """Take the listed devices out of a group."""
    return await inventory.remove_devices_from_group(identity.tenant, name, device_ids)
