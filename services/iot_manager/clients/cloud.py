"""The device registries of the clouds, as the app sees them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from services.iot_manager.models import DeviceState

__all__ = ["CloudConflict", "CloudError", "CloudRegistry"]


class CloudError(Exception):
    """A cloud API failed; `status` is its HTTP status (None: it could not be reached)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CloudConflict(CloudError):
    """The device's state changed in the cloud while it was being replaced."""


class CloudRegistry(Protocol):
    """A cloud's device registry, as one integration's credentials reach it."""

    async def provision(self, device_id: str, *, enabled: bool) -> None:
        """Create the device (or update an existing one), enabled or disabled."""
        ...

    async def set_enabled(self, device_id: str, *, enabled: bool) -> None:
        """Enable or disable the device (creating it when it is missing)."""
        ...

    async def remove(self, device_id: str) -> None:
        """Delete the device and its credentials (nothing to do when it is missing)."""
        ...

    async def get_state(self, device_id: str) -> DeviceState:
        """The device's desired and reported state."""
        ...

    async def set_desired(self, device_id: str, desired: Mapping[str, Any]) -> DeviceState:
        """Replace the device's desired state (CloudConflict on a concurrent change)."""
        ...
