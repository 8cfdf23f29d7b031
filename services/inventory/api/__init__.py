"""HTTP surfaces of the inventory: devices, management (v1, v2) and internal APIs."""

from services.inventory.api.devices import router as devices_router
from services.inventory.api.internal import internal_v1, internal_v2
from services.inventory.api.management import router as management_v1
from services.inventory.api.management_v2 import management_v2, management_v2alpha1

__all__ = [
    "devices_router",
    "internal_v1",
    "internal_v2",
    "management_v1",
    "management_v2",
    "management_v2alpha1",
]
