"""Fixtures of the deviceconnect tests: the app served on a real port, fake devices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from common.localstack.embedded import free_port
from services.deviceconnect.config import Settings
from services.deviceconnect.main import create_app, server_config
from tests.deviceconnect.fakes import FakeDevice, device_token, open_ws
from tests.toolkit import eventually

DEVICE_WS = "/api/devices/v1/deviceconnect/connect"
MGMT = "/api/management/v1/deviceconnect"
INTERNAL = "/api/internal/v1/deviceconnect"


@dataclass
class Running:
    """A deviceconnect instance on a real port."""

    url: str
    client: httpx.AsyncClient
    settings: Settings

    @property
    def ws_url(self) -> str:
        """The base URL for websockets."""
        return "ws" + self.url.removeprefix("http")

    @asynccontextmanager
    async def device(self, device_id: str, tenant: str = "") -> AsyncIterator[FakeDevice]:
        """A fake device connected to this instance, answering like mender-connect."""
        async with open_ws(self.ws_url + DEVICE_WS, device_token(device_id, tenant)) as ws:
            fake = FakeDevice(ws)
            fake.start()
            try:
                yield fake
            finally:
                await fake.stop()


# auditlogs "deployed" where nothing listens: its audit events stay queued in the outbox,
# where the tests read them.
AUDITLOGS_ADDR = "http://127.0.0.1:9"


def make_settings(mongo_url: str, db_name: str, **overrides: Any) -> Settings:
    """Settings of a test instance."""
    values: dict[str, Any] = {
        "mongo_url": mongo_url,
        "mongo_db": db_name,
        "dev_mode": True,
        "auditlogs_addr": AUDITLOGS_ADDR,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Running]:
    """Serve deviceconnect with uvicorn (websockets need a real server) on a free port."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(server_config(app, settings, port=port, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done())
        assert server.started, "deviceconnect did not start"
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Running(url, client, settings)
    finally:
        server.should_exit = True
        await task


ServeFactory = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture
def serve_with(mongo_url: str, db_name: str) -> ServeFactory:
    """`async with serve_with(**settings) as dc`: an instance with overridden settings."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[Running]:
        return serve(make_settings(mongo_url, db_name, **overrides))

    return factory


@pytest.fixture
async def dc(serve_with: ServeFactory) -> AsyncIterator[Running]:
    """An instance with default settings on the test's fresh database."""
    async with serve_with() as running:
        yield running
