"""Fixtures of the iot-manager tests: apps on fresh databases, a webhook receiver, users."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.iot_manager.config import Settings
from services.iot_manager.main import create_app
from tests.conftest import ClientFactory
from tests.toolkit import LiveServer, eventually

MGMT: Final = "/api/management/v1/iot-manager"
INTERNAL: Final = "/api/internal/v1/iot-manager"
SECRET: Final = "00ff10aa"


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def user_headers(tenant: str = "", sub: str = "user-1") -> dict[str, str]:
    """The Authorization header of a user token as services see it behind the gateway."""
    claims: dict[str, Any] = {"sub": sub, "mender.user": True, "jti": "j"}
    if tenant:
        claims["mender.tenant"] = tenant
    token = f"{_b64url({'alg': 'RS256', 'typ': 'JWT'})}.{_b64url(claims)}.c2ln"
    return {"Authorization": f"Bearer {token}"}


USER: Final = user_headers()


def mender_signature(secret: str, body: bytes) -> str:
    """The signature Mender puts in X-Men-Signature: HMAC-SHA256 keyed by the secret's bytes."""
    return hmac.new(bytes.fromhex(secret), body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    """One request a webhook receiver got."""

    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        """The posted event."""
        event: dict[str, Any] = json.loads(self.body)
        return event


@dataclass
class Receiver:
    """A webhook receiver: records what it gets and answers `status`."""

    server: LiveServer
    deliveries: list[Delivery] = field(default_factory=list)
    status: int = 200

    @property
    def url(self) -> str:
        """Where webhooks are posted."""
        return f"{self.server.url}/hooks"

    def events(self) -> list[dict[str, Any]]:
        """The events received, in order."""
        return [d.event for d in self.deliveries]


def _receiver_app(receiver: Callable[[], Receiver]) -> FastAPI:
    app = FastAPI()

    @app.post("/hooks")
    async def hook(request: Request) -> Response:
        target = receiver()
        target.deliveries.append(Delivery(await request.body(), dict(request.headers)))
        return Response(status_code=target.status)

    return app


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A running webhook receiver on 127.0.0.1."""
    holder: list[Receiver] = []
    server = LiveServer(_receiver_app(lambda: holder[0]))
    holder.append(Receiver(server))
    await server.start()
    try:
        yield holder[0]
    finally:
        await server.stop()


@pytest.fixture
def make_settings(mongo_url: str, db_name: str) -> Callable[..., Settings]:
    """Settings of a test app on the test's fresh database (overrides as keywords)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mongo_url": mongo_url,
            "mongo_db": db_name,
            "dev_mode": True,
            "domain_skipverify": True,
            "domain_whitelist": "*.azure-devices.net localhost",
            "outbox_poll_interval": 0.1,
            "retry_max_backoff": 0.2,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an iot-manager app that may call loopback targets, lifespan running."""
    async with asgi_client(create_app(make_settings(), environ={})) as c:
        yield c


Drained = Callable[[], Awaitable[None]]


@pytest.fixture
def drained(mongo: AsyncMongoClient[Document], db_name: str) -> Drained:
    """Wait until the app's outbox is empty: every delivery done, none set aside."""

    async def wait() -> None:
        async def empty() -> bool:
            return await mongo[db_name]["outbox"].count_documents({}) == 0

        await eventually(empty)

    return wait


def webhook(url: str, secret: str | None = SECRET, **extra: Any) -> dict[str, Any]:
    """The body registering a webhook integration."""
    http: dict[str, Any] = {"url": url}
    if secret is not None:
        http["secret"] = secret
    return {"provider": "webhook", "credentials": {"type": "http", "http": http}, **extra}


async def create_integration(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """Register an integration and return its id."""
    r = await client.post(f"{MGMT}/integrations", json=body, headers=USER)
    assert r.status_code == 201, r.text
    return str(r.headers["Location"].rsplit("/", 1)[1])


async def list_events(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """The event log."""
    r = await client.get(f"{MGMT}/events", params=params, headers=USER)
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()
    return events
