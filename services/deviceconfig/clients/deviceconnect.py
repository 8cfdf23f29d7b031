"""deviceconnect's internal API, as deviceconfig uses it: nudging a connected device."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

from common.core.peers import PeerClient

__all__ = ["DeviceconnectClient", "HttpDeviceconnectClient"]


class DeviceconnectClient(Protocol):
    """What deviceconfig asks deviceconnect."""

    async def check_update(self, tenant_id: str, device_id: str) -> None:
        """Tell the device, if it is connected, to check for an update now."""
        ...


class HttpDeviceconnectClient(PeerClient):
    """deviceconnect's internal API over httpx."""

    peer_name = "deviceconnect"

    async def check_update(self, tenant_id: str, device_id: str) -> None:
        """`POST …/devices/{id}/check-update`; 404 (unknown) and 409 (offline) are fine."""
        path = (
            f"/api/internal/v1/deviceconnect/tenants/{quote(tenant_id, safe='')}"
            f"/devices/{quote(device_id, safe='')}/check-update"
        )
        await self.request("POST", path, expect=(202, 404, 409))
