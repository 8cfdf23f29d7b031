"""Fixtures of the deviceconfig tests: the app on a fresh database, a real deployments
service beside it, and a stand-in for deviceconnect's internal check-update call."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pymongo import monitoring

from common.core.mongo import add_command_listener
from common.web.routing import TENANT
from services.deployments.config import Settings as DeploymentsSettings
from services.deployments.main import create_app as create_deployments_app
from services.deviceconfig.config import Settings
from services.deviceconfig.main import create_app
from tests.conftest import ClientFactory
from tests.deployments.helpers import device_headers, user_headers
from tests.toolkit import LiveServer

__all__ = ["DEVICE_API", "INTERNAL", "MANAGEMENT", "device_headers", "user_headers"]

DEVICE_API: Final = "/api/devices/v1/deviceconfig/configuration"
MANAGEMENT: Final = "/api/management/v1/deviceconfig/configurations/device"
INTERNAL: Final = "/api/internal/v1/deviceconfig"
DEPLOYMENTS_SECRET: Final = "deviceconfig-tests-presign-secret"


@dataclass
class FakeDeviceconnect:
    """deviceconnect's internal check-update: records each nudge; connected devices get 202."""

    connected: set[str] = field(default_factory=set)
    nudges: list[tuple[str, str]] = field(default_factory=list)
    broken: bool = False

    def app(self) -> FastAPI:
        """The ASGI app serving the one endpoint deviceconfig calls."""
        app = FastAPI()

        @app.post(
            f"/api/internal/v1/deviceconnect/tenants/{TENANT}/devices/{{device_id}}/check-update"
        )
        async def check_update(tenant_id: str, device_id: str) -> Response:
            self.nudges.append((tenant_id, device_id))
            if self.broken:
                return JSONResponse({"error": "internal error"}, status_code=500)
            return Response(status_code=202 if device_id in self.connected else 409)

        return app


@dataclass(frozen=True)
class Deployments:
    """A real deployments service on a loopback port, and a client on it."""

    url: str
    client: httpx.AsyncClient

    async def deployment(self, deployment_id: str, tenant: str = "") -> dict[str, Any]:
        """One deployment, as its management API shows it."""
        response = await self.client.get(
            f"/api/management/v1/deployments/deployments/{deployment_id}",
            headers=user_headers(tenant),
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="session")
async def deployments(
    mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployments]:
    """The deployments service deviceconfig creates configuration deployments in."""
    settings = DeploymentsSettings(
        mongo_url=mongo_url,
        mongo_db=f"test_{uuid.uuid4().hex[:12]}",
        dev_mode=True,
        storage_path=tmp_path_factory.mktemp("deployments-storage"),
        presign_secret=DEPLOYMENTS_SECRET,
    )
    async with (
        LiveServer(create_deployments_app(settings), lifespan="on") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        yield Deployments(url=server.url, client=client)


@pytest.fixture(scope="session")
async def _deviceconnect_server() -> AsyncIterator[tuple[FakeDeviceconnect, LiveServer]]:
    fake = FakeDeviceconnect()
    async with LiveServer(fake.app()) as server:
        yield fake, server


@pytest.fixture
def deviceconnect(_deviceconnect_server: tuple[FakeDeviceconnect, LiveServer]) -> FakeDeviceconnect:
    """The stand-in deviceconnect, reset for each test."""
    fake, _ = _deviceconnect_server
    fake.connected.clear()
    fake.nudges.clear()
    fake.broken = False
    return fake


@pytest.fixture
def settings(
    mongo_url: str,
    db_name: str,
    deployments: Deployments,
    _deviceconnect_server: tuple[FakeDeviceconnect, LiveServer],
) -> Settings:
    """Settings of a fresh deviceconfig service with both peers."""
    return Settings(
        mongo_url=mongo_url,
        mongo_db=db_name,
        dev_mode=True,
        deployments_addr=deployments.url,
        deviceconnect_addr=_deviceconnect_server[1].url,
    )


@pytest.fixture
async def client(
    settings: Settings, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """The deviceconfig app, served in-process with its lifespan."""
    async with asgi_client(create_app(settings)) as c:
        yield c


class CommandRecorder(monitoring.CommandListener):
    """The filters of the queries and writes the service sends to one database."""

    def __init__(self) -> None:
        self.database = ""
        self.filters: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name != self.database:
            return
        cmd = event.command
        name = event.command_name
        if name == "find":
            self.filters.append((cmd["find"], dict(cmd.get("filter") or {})))
        elif name in ("update", "delete"):
            for statement in cmd.get("updates" if name == "update" else "deletes", []):
                self.filters.append((cmd[name], dict(statement["q"])))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_recorder = CommandRecorder()
add_command_listener(_recorder)


@pytest.fixture
def recorder(db_name: str) -> Iterator[CommandRecorder]:
    """What the service asks of its database during the test."""
    _recorder.database = db_name
    _recorder.filters.clear()
    try:
        yield _recorder
    finally:
        _recorder.database = ""
