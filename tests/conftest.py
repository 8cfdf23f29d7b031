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

from common.embedded import EmbeddedMongo
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
