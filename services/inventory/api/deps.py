"""Dependencies shared by the inventory's routes.

The lifespan builds one `Services` object; routes take its parts through the `…Dep` aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.web.app import services_dependency
from common.web.identity import DeviceIdentity, UserIdentity
from services.inventory.app import InventoryApp
from services.inventory.config import Settings

__all__ = ["DeviceIdentity", "InventoryAppDep", "Services", "ServicesDep", "UserIdentity"]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases."""

    settings: Settings
    inventory: InventoryApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _inventory(services: ServicesDep) -> InventoryApp:
    return services.inventory


InventoryAppDep = Annotated[InventoryApp, Depends(_inventory)]
