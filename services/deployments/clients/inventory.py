"""Inventory's internal API, as deployments uses it (device searches and groups)."""

from __future__ import annotations

from typing import Any, Final, Protocol
from urllib.parse import quote

import httpx

from common.core.errors import BadGateway, ServiceUnavailable
from common.core.peers import PeerClient

__all__ = ["PAGE_SIZE", "Inventory", "InventoryClient", "NoInventory"]

# Mender resolves deployment targets in inventory pages of 500 devices.
PAGE_SIZE: Final = 500
# A safety stop: no tenant has ten million accepted devices.
_MAX_PAGES: Final = 20_000


class Inventory(Protocol):
    """What deployments asks inventory."""

    async def accepted_devices(self, tenant_id: str, *, group: str | None = None) -> list[str]:
        """Ids of the accepted devices (of the group, if given)."""
        ...

    async def device_groups(self, tenant_id: str, device_id: str) -> list[str]:
        """The groups the device belongs to (empty when unknown)."""
        ...

    async def find_devices(
        self, tenant_id: str, *, scope: str, attribute: str, value: str
    ) -> list[str]:
        """Ids of the devices whose attribute equals the value."""
        ...


def _tenant_path(tenant_id: str) -> str:
    return quote(tenant_id, safe="")


class InventoryClient(PeerClient):
    """httpx client of inventory's internal v1/v2 API."""

    peer_name = "inventory"

    async def _search(self, tenant_id: str, filters: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for page in range(1, _MAX_PAGES + 1):
            response = await self.request(
                "POST",
                f"/api/internal/v2/inventory/tenants/{_tenant_path(tenant_id)}/filters/search",
                json={
                    "page": page,
                    "per_page": PAGE_SIZE,
                    "filters": filters,
                    "attributes": [{"scope": "identity", "attribute": "status"}],
                },
            )
            devices = _json_list(response)
            for device in devices:
                device_id = device.get("id") if isinstance(device, dict) else None
                if isinstance(device_id, str) and device_id not in ids:
                    ids.append(device_id)
            if len(devices) < PAGE_SIZE:
                break
        return ids

    async def accepted_devices(self, tenant_id: str, *, group: str | None = None) -> list[str]:
        """Search `identity.status == accepted` (and `system.group == group`), page by page."""
        filters: list[dict[str, Any]] = [
            {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"}
        ]
        if group is not None:
            filters.append({"scope": "system", "attribute": "group", "type": "$eq", "value": group})
        return await self._search(tenant_id, filters)

    async def device_groups(self, tenant_id: str, device_id: str) -> list[str]:
        """`GET …/devices/{id}/groups`; a device unknown to inventory has none."""
        response = await self.request(
            "GET",
            f"/api/internal/v1/inventory/tenants/{_tenant_path(tenant_id)}"
            f"/devices/{quote(device_id, safe='')}/groups",
            expect=(200, 404),
        )
        if response.status_code == 404:
            return []
        try:
            body = response.json()
        except ValueError as exc:
            raise BadGateway("inventory answered with invalid JSON") from exc
        groups = body.get("groups") if isinstance(body, dict) else None
        return [g for g in groups or [] if isinstance(g, str)]

    async def find_devices(
        self, tenant_id: str, *, scope: str, attribute: str, value: str
    ) -> list[str]:
        """Search one attribute for equality."""
        return await self._search(
            tenant_id, [{"scope": scope, "attribute": attribute, "type": "$eq", "value": value}]
        )


def _json_list(response: httpx.Response) -> list[Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise BadGateway("inventory answered with invalid JSON") from exc
    if not isinstance(body, list):
        raise BadGateway("inventory answered with an unexpected document")
    return body


class NoInventory:
    """Stands in when inventory is not deployed: searches fail, groups are unknown."""

    async def accepted_devices(self, tenant_id: str, *, group: str | None = None) -> list[str]:
        """Refuse: resolving groups needs inventory."""
        del tenant_id, group
        raise ServiceUnavailable("inventory is not configured")

    async def device_groups(self, tenant_id: str, device_id: str) -> list[str]:
        """No groups are known."""
        del tenant_id, device_id
        return []

    async def find_devices(
        self, tenant_id: str, *, scope: str, attribute: str, value: str
    ) -> list[str]:
        """Refuse: device lookups need inventory."""
        del tenant_id, scope, attribute, value
        raise ServiceUnavailable("inventory is not configured")
