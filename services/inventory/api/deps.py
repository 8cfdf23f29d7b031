"""Dependencies shared by the inventory's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from common.identity import DeviceIdentity, UserIdentity
from services.inventory.app import InventoryApp

__all__ = ["DeviceIdentity", "InventoryAppDep", "UserIdentity"]


def _inventory(request: Request) -> InventoryApp:
    app: InventoryApp = request.app.state.inventory
    return app


InventoryAppDep = Annotated[InventoryApp, Depends(_inventory)]
