"""Fixtures of the deployments tests: the app with its lifespan, artifacts, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aioboto3
import httpx
import pytest
from aiobotocore.config import AioConfig
from fastapi import FastAPI

from common.core.mongo import create_client, ensure_indexes
from common.core.outbox import Outbox
from common.web.app import services_of
from services.deployments.api.deps import Services
from services.deployments.config import Settings
from services.deployments.main import create_app
from services.deployments.store.indexes import INDEXES
from services.deployments.store.mongo import MongoStore
from tests.conftest import ClientFactory
from tests.deployments.helpers import ArtifactFactory, FakeInventory, multipart_body, user_headers
from tests.deployments.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedS3
from tests.toolkit import LiveServer

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the session; tests keep to buckets of their own."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def s3(s3_server: SeaweedS3) -> AsyncIterator[S3Client]:
    """A plain S3 client for checking what the backend left in the bucket."""
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name="us-east-1",
        config=AioConfig(s3={"addressing_style": "path"}, signature_version="s3v4"),
    ) as client:
        yield client


@pytest.fixture
async def store(mongo_url: str, db_name: str) -> AsyncIterator[MongoStore]:
    """A store on a fresh database with its indexes, its client watched for tenant scoping."""
    client = create_client(mongo_url)
    try:
        await ensure_indexes(client[db_name], INDEXES)
        db = client[db_name]
        yield MongoStore(db, outbox=Outbox(db, ()))
    finally:
        await client.close()


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
        # One process per test: the periodic refresh of the idle-poll snapshots (for other
        # replicas' deployments, tested on its own) stays out of the queries tests count.
        poll_snapshot_refresh=timedelta(hours=1),
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
