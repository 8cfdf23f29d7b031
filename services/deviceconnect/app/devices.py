"""Devices as deviceauth tells deviceconnect about them, and their connection state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from services.deviceconnect.app.connections import Connections
from services.deviceconnect.models import ConnectionStatus, Device
from services.deviceconnect.store import DataStore

__all__ = ["DevicesApp"]


class DevicesApp:
    """Provisioning, decommissioning and the connection state of devices."""

    def __init__(
        self, store: DataStore, connections: Connections, *, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._connections = connections
        self._clock = clock

    async def get(self, tenant_id: str, device_id: str) -> Device:
        """The device's connection state (DeviceNotFound when unknown)."""
        return await self._connections.status(tenant_id, device_id)

    async def provision(self, tenant_id: str, device_ids: Sequence[str]) -> None:
        """Know newly accepted devices (idempotent)."""
        await self._store.provision_devices(tenant_id, device_ids, now=self._clock())

    async def decommission(self, tenant_id: str, device_id: str) -> None:
        """Forget a device and cut its connection at once (idempotent)."""
        stored = await self._store.delete_device(tenant_id, device_id)
        await self._connections.cut_off(tenant_id, stored or self._unknown(device_id))

    async def disconnect(self, tenant_id: str, device_id: str) -> None:
        """Cut the device's connection at once (it is no longer accepted)."""
        stored = await self._store.get_device(tenant_id, device_id)
        await self._connections.cut_off(tenant_id, stored or self._unknown(device_id))

    async def delete_tenant(self, tenant_id: str) -> None:
        """Delete a tenant's data and cut its devices' connections."""
        connected = await self._store.connected_devices(tenant_id)
        await self._store.delete_tenant(tenant_id)
        for device in connected:
            await self._connections.cut_off(tenant_id, device)

    def _unknown(self, device_id: str) -> Device:
        now = self._clock()
        return Device(id=device_id, status=ConnectionStatus.UNKNOWN, created_ts=now, updated_ts=now)
