"""Fixtures of the inventory tests: the app over a fresh database, tokens, seeding helpers."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from common.core.mongo import Document
from services.inventory.config import Settings
from services.inventory.main import create_app
from tests.conftest import ClientFactory

DEVICES_API = "/api/devices/v1/inventory/device/attributes"
MGMT_V1 = "/api/management/v1/inventory"
MGMT_V2 = "/api/management/v2/inventory"
INTERNAL_V1 = "/api/internal/v1/inventory"
INTERNAL_V2 = "/api/internal/v2/inventory"


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _token(claims: dict[str, Any]) -> str:
    # Services decode claims only (the gateway verifies signatures).
    return f"{_b64url({'alg': 'RS256', 'typ': 'JWT'})}.{_b64url(claims)}.c2ln"


def device_headers(device_id: str, tenant: str = "") -> dict[str, str]:
    """Authorization of a device, as the gateway forwards it."""
    claims: dict[str, Any] = {"sub": device_id, "mender.device": True}
    if tenant:
        claims["mender.tenant"] = tenant
    return {"Authorization": f"Bearer {_token(claims)}"}


def user_headers(tenant: str = "") -> dict[str, str]:
    """Authorization of a user, as the gateway forwards it."""
    claims: dict[str, Any] = {"sub": "user-1", "mender.user": True}
    if tenant:
        claims["mender.tenant"] = tenant
    return {"Authorization": f"Bearer {_token(claims)}"}


USER = user_headers()


def attrs_by_key(device: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A rendered device's attributes keyed `scope/name`."""
    return {f"{a['scope']}/{a['name']}": a for a in device["attributes"]}


def make_settings(mongo_url: str, db_name: str | None = None) -> Settings:
    """Settings for a test app (small limits keep the limit tests short)."""
    return Settings(
        mongo_url=mongo_url,
        mongo_db=db_name or f"test_{uuid.uuid4().hex[:12]}",
        dev_mode=True,
        limit_attributes=10,
        limit_tags=3,
    )


@pytest.fixture
def settings(mongo_url: str, db_name: str) -> Settings:
    """Settings for one test's app, on the test's fresh database."""
    return make_settings(mongo_url, db_name)


@pytest.fixture
async def client(
    settings: Settings, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """The inventory app, served in-process with its lifespan."""
    async with asgi_client(create_app(settings)) as c:
        yield c


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Serve an inventory app in-process (for fixtures wider than one test)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


@pytest.fixture
def devices(mongo: AsyncMongoClient[Document], db_name: str) -> AsyncCollection[Document]:
    """The raw `devices` collection, to check what was stored."""
    return mongo[db_name]["devices"]


async def put_inventory(
    client: httpx.AsyncClient, device_id: str, attributes: list[dict[str, Any]], tenant: str = ""
) -> None:
    """Report inventory as the device itself does (PUT)."""
    r = await client.put(DEVICES_API, json=attributes, headers=device_headers(device_id, tenant))
    assert r.status_code == 200, r.text


async def set_status(
    client: httpx.AsyncClient,
    status: str,
    device_ids: list[str],
    revision: int = 1,
    tenant: str = "",
) -> None:
    """Record deviceauth's status of devices."""
    body = [{"id": d, "revision": revision} for d in device_ids]
    r = await client.post(f"{INTERNAL_V1}/tenants/{tenant}/devices/status/{status}", json=body)
    assert r.status_code == 200, r.text


async def get_device(client: httpx.AsyncClient, device_id: str, tenant: str = "") -> dict[str, Any]:
    """The rendered device, as a user sees it."""
    r = await client.get(f"{MGMT_V1}/devices/{device_id}", headers=user_headers(tenant))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
