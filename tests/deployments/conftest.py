"""Fixtures of the deployments tests: the app with its lifespan, artifacts, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from common.web.app import services_of
from services.deployments.api.deps import Services
from services.deployments.config import Settings
from services.deployments.main import create_app
from tests.conftest import ClientFactory
from tests.deployments.helpers import ArtifactFactory, FakeInventory, multipart_body, user_headers
from tests.toolkit import LiveServer

TEST_SECRET = "test-presign-secret"


@pytest.fixture(scope="session")
def artifacts_factory(tmp_path_factory: pytest.TempPathFactory) -> ArtifactFactory:
    """Real artifacts made with mender-artifact, cached for the session."""
    return ArtifactFactory(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
async def _inventory_server() -> AsyncIterator[tuple[FakeInventory, LiveServer]]:
    fake = FakeInventory()
    server = LiveServer(fake.app())
    await server.start()
    try:
        yield fake, server
    finally:
        await server.stop()


@pytest.fixture
def inventory(_inventory_server: tuple[FakeInventory, LiveServer]) -> FakeInventory:
    """The fake inventory the service talks to, emptied for each test."""
    fake, _ = _inventory_server
    fake.devices.clear()
    fake.searches.clear()
    return fake


@pytest.fixture
def settings(
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
    _inventory_server: tuple[FakeInventory, LiveServer],
) -> Settings:
    """Settings of a fresh deployments service (own database and storage directory)."""
    return Settings(
        mongo_url=mongo_url,
        mongo_db=db_name,
        dev_mode=True,
        storage_path=tmp_path / "storage",
        presign_secret=TEST_SECRET,
        inventory_addr=_inventory_server[1].url,
    )


@dataclass
class Service:
    """A running deployments app and a client on it."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def services(self) -> Services:
        """The use-cases built by the lifespan."""
        return services_of(self.app, Services)

    async def upload(
        self,
        content: bytes,
        *,
        tenant: str = "",
        description: str = "",
        fields: list[tuple[str, str]] | None = None,
    ) -> httpx.Response:
        """Upload an artifact through the management API."""
        body, headers = multipart_body(
            [("description", description), *(fields or [])], "artifact", content
        )
        return await self.client.post(
            "/api/management/v1/deployments/artifacts",
            content=body,
            headers={**headers, **user_headers(tenant)},
        )


@pytest.fixture
async def service(asgi_client: ClientFactory, settings: Settings) -> AsyncIterator[Service]:
    """The deployments app (no inventory) with a client."""
    app = create_app(settings)
    async with asgi_client(app) as client:
        yield Service(app=app, client=client, settings=settings)
