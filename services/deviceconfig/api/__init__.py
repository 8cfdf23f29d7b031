"""HTTP surfaces of deviceconfig: devices, management and internal APIs."""

from services.deviceconfig.api.devices import router as devices_router
from services.deviceconfig.api.internal import router as internal_router
from services.deviceconfig.api.management import router as management_router

__all__ = ["devices_router", "internal_router", "management_router"]
