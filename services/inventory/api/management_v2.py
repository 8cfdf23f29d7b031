"""Management API v2 (search, filterable attributes, statistics) and v2alpha1."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Request, Response

from common.web.paging import set_page_headers
from services.inventory.api.deps import InventoryAppDep, UserIdentity
from services.inventory.api.schemas import DeviceOut, StatisticsOut
from services.inventory.models import FilterAttribute, IdentitySearchParams, SearchParams

__all__ = ["PREFIX", "PREFIX_V2ALPHA1", "management_v2", "management_v2alpha1"]

PREFIX: Final = "/api/management/v2/inventory"
PREFIX_V2ALPHA1: Final = "/api/management/v2alpha1/inventory"

management_v2 = APIRouter(prefix=PREFIX, tags=["management"])
management_v2alpha1 = APIRouter(prefix=PREFIX_V2ALPHA1, tags=["management"])


@management_v2.get("/filters/attributes")
async def get_filterable_attributes(
    identity: UserIdentity, inventory: InventoryAppDep
) -> list[FilterAttribute]:
    """List the attributes devices carry, most common first."""
    return await inventory.filter_attributes(identity.tenant)


@management_v2.post("/filters/search")
async def search_devices(
    request: Request,
    response: Response,
    identity: UserIdentity,
    inventory: InventoryAppDep,
    params: Annotated[SearchParams | None, Body()] = None,
) -> list[DeviceOut]:
    """Search devices by attribute filters, ids and free text; sorted and paged."""
    devices, total, page = await inventory.search_devices(identity.tenant, params)
    set_page_headers(request, response, page, total=total)
    return [DeviceOut.of(d) for d in devices]


@management_v2.get("/statistics")
async def get_statistics(identity: UserIdentity, inventory: InventoryAppDep) -> StatisticsOut:
    """Count accepted and pending devices per tier."""
    return StatisticsOut(devices_by_status=await inventory.statistics(identity.tenant))


@management_v2alpha1.post("/identities/search")
async def search_identities(
    request: Request,
    response: Response,
    params: IdentitySearchParams,
    identity: UserIdentity,
    inventory: InventoryAppDep,
) -> list[DeviceOut]:
    """Find devices whose identity attribute, id or tag starts with a prefix."""
    devices, total, page = await inventory.search_identities(identity.tenant, params)
    set_page_headers(request, response, page, total=total)
    return [DeviceOut.of(d) for d in devices]
