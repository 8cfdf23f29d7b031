"""The devicemonitor peer: how many alerts a device currently has."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

from common.core.errors import BadGateway
from common.core.peers import PeerClient

__all__ = ["DevicemonitorClient", "HttpDevicemonitorClient"]


class DevicemonitorClient(Protocol):
    """What the inventory asks devicemonitor."""

    async def count_latest_alerts(self, tenant_id: str, device_id: str) -> int:
        """Return the number of the device's latest alerts."""
        ...


class HttpDevicemonitorClient(PeerClient):
    """devicemonitor's internal API over httpx."""

    peer_name = "devicemonitor"

    async def count_latest_alerts(self, tenant_id: str, device_id: str) -> int:
        """Return the number of the device's latest alerts."""
        path = (
            f"/api/internal/v1/devicemonitor/tenants/{quote(tenant_id, safe='')}"
            f"/devices/{quote(device_id, safe='')}/alerts/latest"
        )
        response = await self.request("GET", path)
        try:
            alerts = response.json()
        except ValueError:
            alerts = None
        if not isinstance(alerts, list):
            raise BadGateway("devicemonitor answered an unexpected alerts document")
        return len(alerts)
