"""HTTP surfaces of deviceauth: one router per API (devices, management, internal)."""

from services.deviceauth.api.devices import router as devices_router
from services.deviceauth.api.internal import router as internal_router
from services.deviceauth.api.management import router as management_router

__all__ = ["devices_router", "internal_router", "management_router"]
