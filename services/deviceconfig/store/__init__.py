"""deviceconfig's storage interface; `MongoStore` implements it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from common.core.outbox import Effect
from services.deviceconfig.models import Configuration, DeviceConfiguration

__all__ = ["DataStore", "DeviceIdTaken"]


class DeviceIdTaken(Exception):
    """The device id is already recorded (in this tenant, or for another one)."""


class DataStore(Protocol):
    """Where device configurations live; every method is confined to one tenant."""

    async def get_device(self, tenant_id: str, device_id: str) -> DeviceConfiguration | None:
        """Return one device, or None."""
        ...

    async def insert_device(self, tenant_id: str, device: DeviceConfiguration) -> None:
        """Record a new device; `DeviceIdTaken` if it exists."""
        ...

    async def insert_devices(self, tenant_id: str, devices: Sequence[DeviceConfiguration]) -> None:
        """Record new devices in one statement, leaving those that exist as they are."""
        ...

    async def replace_configured(
        self,
        tenant_id: str,
        device_id: str,
        configured: Configuration,
        *,
        now: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Set the desired configuration (recording the device if new), with `effects`."""
        ...

    async def update_configured(
        self,
        tenant_id: str,
        device_id: str,
        configured: Configuration,
        *,
        now: datetime,
        revision: int,
    ) -> bool:
        """Set the desired configuration if it is still at `revision`; whether it was."""
        ...

    async def replace_reported(
        self, tenant_id: str, device_id: str, reported: Configuration, *, now: datetime
    ) -> None:
        """Set what the device reported (recording the device if new)."""
        ...

    async def set_deployment_id(
        self,
        tenant_id: str,
        device_id: str,
        deployment_id: str,
        *,
        effects: Sequence[Effect] = (),
    ) -> bool:
        """Record the device's latest configuration deployment, with `effects`; whether the
        device exists (nothing is written when it does not)."""
        ...

    async def delete_device(self, tenant_id: str, device_id: str) -> bool:
        """Forget a device; whether it existed."""
        ...

    async def delete_tenant(self, tenant_id: str) -> int:
        """Forget every device of a tenant; how many there were."""
        ...
