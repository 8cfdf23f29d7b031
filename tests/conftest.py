"""Fixtures shared by every test tier: one embedded Mongo-wire server per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient, monitoring

from common.core.mongo import Document, add_command_listener
from common.localstack.embedded import EmbeddedMongo, free_port
from common.localstack.launcher import Stack
from tests.e2e.api import ManagementApi

# The shared toolkit (assert_error, eventually, clocks, live servers), with its fixtures.
pytest_plugins = ["tests.toolkit"]


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """A Mongo-wire server for the whole session: `TEST_MONGO_URL` or an embedded one."""
    external = os.environ.get("TEST_MONGO_URL")
    if external:
        yield external
        return
    server = EmbeddedMongo(":memory:", test_commands=True)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def db_name() -> str:
    """A fresh database name for one test."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def mongo(mongo_url: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    """An async client for checking what a test wrote (not watched by the scoping guard)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_url, tz_aware=True, uuidRepresentation="standard"
    )
    try:
        yield client
    finally:
        await client.close()


ClientFactory = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def _serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
def asgi_client() -> ClientFactory:
    """Serve an app in-process with its lifespan running: `async with asgi_client(app) as c`."""
    return _serve


@pytest.fixture(scope="session")
def stack(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole server (every built service and the gateway) as real processes."""
    running = Stack(
        state_dir=tmp_path_factory.mktemp("fleetport"),
        gateway_port=free_port(),
        mongo_url=mongo_url,
        # Webhook receivers in the tests listen on 127.0.0.1; retries stay a few seconds apart.
        extra_env={"IOT_MANAGER_DOMAIN_SKIPVERIFY": "true", "IOT_MANAGER_RETRY_MAX_BACKOFF": "2"},
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="session")
def admin(stack: Stack) -> tuple[str, str]:
    """Credentials of an admin user created with useradm's command line."""
    result = stack.run_module(
        "useradm", "create-user", "--username", ADMIN_EMAIL, "--password", ADMIN_PASSWORD
    )
    assert result.returncode == 0, result.stderr
    return ADMIN_EMAIL, ADMIN_PASSWORD


@pytest.fixture(scope="session")
def admin_token(stack: Stack, admin: tuple[str, str]) -> str:
    """A user token of the admin, from a login through the gateway."""
    response = httpx.post(f"{stack.url}/api/management/v1/useradm/auth/login", auth=admin)
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="session")
def api(stack: Stack, admin_token: str) -> Iterator[ManagementApi]:
    """The management API through the gateway, as the admin."""
    client = ManagementApi(stack.url, admin_token)
    try:
        yield client
    finally:
        client.close()


class _TenantGuard(monitoring.CommandListener):
    """Records every query or write on a service collection that does not name a tenant."""

    _EXEMPT: Final = frozenset({"outbox", "outbox_leases", "revocations", "revocation_sequence"})

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.active = False

    @staticmethod
    def _filters(name: str, cmd: Mapping[str, Any]) -> list[Any]:
        if name in ("find", "count", "distinct"):
            return [cmd.get("filter", cmd.get("query")) or {}]
        if name == "findAndModify":
            return [cmd.get("query") or {}]
        if name == "update":
            return [u.get("q", {}) for u in cmd.get("updates", [])]
        if name == "delete":
            return [d.get("q", {}) for d in cmd.get("deletes", [])]
        if name == "insert":
            return list(cmd.get("documents", []))
        if name == "aggregate":
            pipeline = cmd.get("pipeline") or [{}]
            return [pipeline[0].get("$match", {})]
        return []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.active or event.database_name in ("admin", "config", "local"):
            return
        cmd = event.command
        collection = cmd.get(event.command_name)
        if not isinstance(collection, str) or collection in self._EXEMPT:
            return
        for doc in self._filters(event.command_name, cmd):
            if "tenant_id" not in doc:
                self.violations.append(f"{event.command_name} on {collection}: {dict(doc)!r:.200}")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_tenant_guard = _TenantGuard()
add_command_listener(_tenant_guard)


@pytest.fixture(autouse=True)
def tenant_scoping_guard() -> Iterator[None]:
    """Fail a test whose service code touched a collection without `TenantCollection`.

    Only clients made by `common.core.mongo.create_client` (the services') are watched; the
    `mongo` fixture's client is free to inspect and prepare raw documents.
    """
    _tenant_guard.violations.clear()
    _tenant_guard.active = True
    try:
        yield
    finally:
        _tenant_guard.active = False
    assert not _tenant_guard.violations, (
        "collections queried without tenant scoping (use common.core.mongo.TenantCollection):\n"
        + "\n".join(_tenant_guard.violations[:10])
    )
