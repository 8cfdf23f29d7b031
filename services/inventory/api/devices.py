"""Devices API: what a device reports about itself."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response

from services.inventory.api.deps import DeviceIdentity, InventoryAppDep
from services.inventory.models import NewAttribute

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/devices/v1/inventory"

router = APIRouter(prefix=PREFIX, tags=["devices"])


@router.put("/device/attributes", status_code=200)
async def replace_attributes(
    identity: DeviceIdentity, inventory: InventoryAppDep, attributes: list[NewAttribute]
) -> Response:
    """Replace the calling device's inventory attributes with the given set."""
    await inventory.update_device_attributes(
        identity.tenant, identity.subject, attributes=attributes, replace=True
    )
    return Response(status_code=200)


@router.patch("/device/attributes", status_code=200)
async def update_attributes(
    identity: DeviceIdentity, inventory: InventoryAppDep, attributes: list[NewAttribute]
) -> Response:
    """Add or overwrite inventory attributes of the calling device."""
    await inventory.update_device_attributes(
        identity.tenant, identity.subject, attributes=attributes, replace=False
    )
    return Response(status_code=200)
