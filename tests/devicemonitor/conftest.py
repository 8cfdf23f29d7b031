"""Fixtures of the devicemonitor tests: the app on a fresh database with a hand-moved clock,
and a real inventory service beside it (the two call each other)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import pytest
from pymongo import AsyncMongoClient
from starlette.types import ASGIApp, Receive, Scope, Send

from common.core.mongo import Document
from services.devicemonitor.config import Settings
from services.devicemonitor.main import create_app
from services.inventory.config import Settings as InventorySettings
from services.inventory.main import create_app as create_inventory_app
from tests.conftest import ClientFactory
from tests.deployments.helpers import device_headers, user_headers
from tests.toolkit import LiveServer, ManualClock

__all__ = [
    "DEVICE_API",
    "INTERNAL",
    "MANAGEMENT",
    "RETENTION",
    "START",
    "alert",
    "device_headers",
    "outbox",
    "user_headers",
]

DEVICE_API: Final = "/api/devices/v1/devicemonitor"
MANAGEMENT: Final = "/api/management/v1/devicemonitor"
INTERNAL: Final = "/api/internal/v1/devicemonitor"
START: Final = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The tests' times are fixed and past: telemetry kept this long does not expire under them
# (the TTL monitor runs on the real clock).
RETENTION: Final = timedelta(days=36_500)


def alert(
    name: str = "sshd",
    level: str = "CRITICAL",
    *,
    at: datetime = START,
    status: str = "not-running",
    **extra: Any,
) -> dict[str, Any]:
    """An alert as the device agent sends it, about a service."""
    return {
        "name": name,
        "level": level,
        "subject": {
            "name": name,
            "type": "systemd",
            "status": status,
            "details": {"description": f"{name} is {status}"},
        },
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        **extra,
    }


async def outbox(mongo: AsyncMongoClient[Document], db_name: str) -> list[Document]:
    """The effects waiting in the service's outbox, oldest first."""
    return await mongo[db_name]["outbox"].find({}).sort("_id", 1).to_list()


@pytest.fixture
def clock() -> ManualClock:
    """The service's clock, starting at a fixed time."""
    return ManualClock(START)


@pytest.fixture
def settings(mongo_url: str, db_name: str) -> Settings:
    """A devicemonitor with no peers (effects for them are not kept)."""
    return Settings(
        mongo_url=mongo_url, mongo_db=db_name, dev_mode=True, telemetry_retention=RETENTION
    )


@pytest.fixture
async def client(
    settings: Settings, clock: ManualClock, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """The devicemonitor app, served in-process with its lifespan."""
    async with asgi_client(create_app(settings, clock=clock.now)) as c:
        yield c


class _Later:
    """An ASGI app whose target is chosen after its server's address is known."""

    target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no app behind the server yet"
        await self.target(scope, receive, send)


@pytest.fixture
async def peered(
    mongo_url: str, db_name: str, clock: ManualClock
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """devicemonitor and a real inventory on loopback ports, each the other's peer.

    Yields a client of each.
    """
    later = _Later()
    monitor = LiveServer(later, lifespan="on")
    inventory = LiveServer(
        create_inventory_app(
            InventorySettings(
                mongo_url=mongo_url,
                mongo_db=f"test_{uuid.uuid4().hex[:12]}",
                dev_mode=True,
                devicemonitor_addr=monitor.url,
            )
        ),
        lifespan="on",
    )
    later.target = create_app(
        Settings(
            mongo_url=mongo_url, mongo_db=db_name, dev_mode=True, inventory_addr=inventory.url
        ),
        clock=clock.now,
    )
    async with (
        inventory,
        monitor,
        httpx.AsyncClient(base_url=monitor.url) as monitor_client,
        httpx.AsyncClient(base_url=inventory.url) as inventory_client,
    ):
        yield monitor_client, inventory_client
