"""HTTP surfaces of iot-manager: one router per API (management, internal)."""

from services.iot_manager.api.internal import router as internal_router
from services.iot_manager.api.management import router as management_router

__all__ = ["internal_router", "management_router"]
