"""HTTP surfaces of devicemonitor: devices, management and internal APIs."""

from services.devicemonitor.api.devices import router as devices_router
from services.devicemonitor.api.internal import router as internal_router
from services.devicemonitor.api.management import router as management_router
from services.devicemonitor.api.telemetry import router as telemetry_router

__all__ = ["devices_router", "internal_router", "management_router", "telemetry_router"]
