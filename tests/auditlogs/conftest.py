"""Fixtures of the auditlogs tests: the app on a fresh database, with a real useradm beside it
(where the emails of acting users are looked up)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import pytest

from services.auditlogs.config import Settings
from services.auditlogs.main import create_app
from services.useradm.config import Settings as UseradmSettings
from services.useradm.main import create_app as create_useradm_app
from tests.conftest import ClientFactory
from tests.deployments.helpers import user_headers
from tests.toolkit import LiveServer

__all__ = ["INTERNAL", "LOGS", "Useradm", "event", "post_event", "user_headers"]

INTERNAL: Final = "/api/internal/v1/auditlogs"
LOGS: Final = "/api/management/v1/auditlogs/logs"


@dataclass(frozen=True)
class Useradm:
    """A real useradm on a port of its own, and a way to add users to it."""

    url: str

    async def add_user(self, tenant: str, email: str) -> str:
        """Create a user through useradm's internal API; return its id."""
        base = f"{self.url}/api/internal/v1/useradm/tenants/{tenant}/users"
        async with httpx.AsyncClient() as http:
            created = await http.post(base, json={"email": email, "password": "long-password-1"})
            assert created.status_code == 201, created.text
            found = await http.get(base, params={"email": email})
        assert found.status_code == 200, found.text
        user_id: str = found.json()[0]["id"]
        return user_id


@pytest.fixture
async def useradm(mongo_url: str, db_name: str) -> AsyncIterator[Useradm]:
    """useradm served for real, on its own fresh database."""
    settings = UseradmSettings(mongo_url=mongo_url, mongo_db=f"{db_name}_useradm", dev_mode=True)
    async with LiveServer(create_useradm_app(settings), lifespan="on") as server:
        yield Useradm(server.url)


@pytest.fixture
def settings(mongo_url: str, db_name: str, useradm: Useradm) -> Settings:
    """auditlogs' settings: a fresh database, the real useradm."""
    return Settings(mongo_url=mongo_url, mongo_db=db_name, dev_mode=True, useradm_addr=useradm.url)


@pytest.fixture
async def client(
    settings: Settings, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """auditlogs in-process with its lifespan running."""
    async with asgi_client(create_app(settings)) as client:
        yield client


def event(
    *,
    actor_id: str = "user-1",
    action: str = "create",
    object_type: str = "device",
    object_id: str | None = None,
    when: datetime | None = None,
    details: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An audit event as a peer sends it; `details` of the object go under its type."""
    body: dict[str, Any] = {
        "actor": {"id": actor_id, "type": "user"},
        "action": action,
        "object": {"id": object_id or str(uuid.uuid4()), "type": object_type},
        "time": (when or datetime.now(UTC)).isoformat(),
    }
    if details is not None:
        body["object"][object_type] = details
    body.update(extra)
    return body


async def post_event(
    client: httpx.AsyncClient, body: dict[str, Any], *, tenant: str = "", key: str | None = None
) -> None:
    """Deliver an event as the outbox relay does; it must be accepted."""
    headers = {"Idempotency-Key": key} if key else {}
    response = await client.post(f"{INTERNAL}/tenants/{tenant}/logs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.content == b""
