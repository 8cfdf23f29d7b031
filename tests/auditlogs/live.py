"""A real auditlogs service for the tests of the services that record audit events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from services.auditlogs.config import Settings
from services.auditlogs.main import create_app
from tests.deployments.helpers import user_headers
from tests.toolkit import LiveServer, eventually

__all__ = ["LiveAuditlogs", "live_auditlogs"]

_LOGS = "/api/management/v1/auditlogs/logs"


class LiveAuditlogs:
    """auditlogs on a real port: its address for a peer, and its trail of a tenant."""

    def __init__(self, server: LiveServer) -> None:
        self.url = server.url

    async def trail(self, tenant: str = "") -> list[dict[str, Any]]:
        """Every event of the tenant, oldest first."""
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.get(
                _LOGS, params={"sort": "asc", "per_page": 500}, headers=user_headers(tenant)
            )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()
        return events

    async def wait_for(self, count: int, tenant: str = "") -> list[dict[str, Any]]:
        """The tenant's trail once it holds `count` events."""

        async def arrived() -> bool:
            return len(await self.trail(tenant)) >= count

        await eventually(arrived, what=f"{count} audit events")
        return await self.trail(tenant)


@asynccontextmanager
async def live_auditlogs(mongo_url: str, database: str) -> AsyncIterator[LiveAuditlogs]:
    """Serve auditlogs on `database` (without useradm: events keep the emails they carry)."""
    settings = Settings(mongo_url=mongo_url, mongo_db=database, dev_mode=True)
    async with LiveServer(create_app(settings), lifespan="on") as server:
        yield LiveAuditlogs(server)
