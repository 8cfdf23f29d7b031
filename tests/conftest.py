"""Fixtures shared by every test tier: one embedded Mongo-wire server per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from common.embedded import EmbeddedMongo, free_port
from common.launcher import Stack
from common.mongo import Document, create_client


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """A Mongo-wire server for the whole session: `TEST_MONGO_URL` or an embedded one."""
    external = os.environ.get("TEST_MONGO_URL")
    if external:
        yield external
        return
    server = EmbeddedMongo(":memory:")
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
    """An async client for checking what a test wrote."""
    client = create_client(mongo_url)
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
