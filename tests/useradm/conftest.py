"""Fixtures of the useradm tests: keys, the app over a fresh database, users and tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document
from common.core.tokens import SigningKey, generate_key_file, load_signing_key
from services.useradm.config import Settings
from services.useradm.main import create_app
from tests.conftest import ClientFactory

MGMT_V1 = "/api/management/v1/useradm"
MGMT_V2 = "/api/management/v2/useradm"
INTERNAL = "/api/internal/v1/useradm"
LOGIN = f"{MGMT_V1}/auth/login"
LOGOUT = f"{MGMT_V1}/auth/logout"
USERS = f"{MGMT_V1}/users"
VERIFY = f"{INTERNAL}/auth/verify"
FORWARDED = {"X-Forwarded-Uri": "/api/management/v1/useradm/users", "X-Forwarded-Method": "GET"}

EMAIL = "admin@example.com"
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with useradm's RSA key `private.id.1.pem`."""
    directory = tmp_path_factory.mktemp("useradm-keys")
    generate_key_file(directory / "private.id.1.pem")
    return directory


@pytest.fixture(scope="session")
def key_path(key_dir: Path) -> Path:
    """The signing key's file."""
    return key_dir / "private.id.1.pem"


@pytest.fixture(scope="session")
def signing_key(key_path: Path) -> SigningKey:
    """The key the test apps sign with (kid 1), for forging tokens in tests."""
    return load_signing_key(key_path, with_kid=True)


def make_settings(mongo_url: str, db_name: str, key_path: Path, **overrides: Any) -> Settings:
    """Settings for a test app: fast bcrypt, the test key, small limits where asked."""
    values: dict[str, Any] = {
        "mongo_url": mongo_url,
        "mongo_db": db_name,
        "dev_mode": True,
        "server_priv_key_path": key_path,
        "bcrypt_cost": 4,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(mongo_url: str, db_name: str, key_path: Path) -> Settings:
    """Settings for one test's app, on the test's fresh database."""
    return make_settings(mongo_url, db_name, key_path)


@pytest.fixture
async def client(
    settings: Settings, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """The useradm app, served in-process with its lifespan."""
    async with asgi_client(create_app(settings)) as c:
        yield c


@pytest.fixture
def db(mongo: AsyncMongoClient[Document], db_name: str) -> AsyncDatabase[Document]:
    """The test's raw database, to check and prepare what is stored."""
    return mongo[db_name]


def bearer(token: str) -> dict[str, str]:
    """An Authorization header carrying a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT (unverified)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def header_of(token: str) -> dict[str, Any]:
    """The header of a JWT."""
    head = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return decoded


async def create_user(
    client: httpx.AsyncClient, email: str = EMAIL, password: str = PASSWORD, tenant: str = ""
) -> str:
    """Create a user through the internal API; return their id."""
    r = await client.post(
        f"{INTERNAL}/tenants/{tenant}/users", json={"email": email, "password": password}
    )
    assert r.status_code == 201, r.text
    r = await client.get(f"{INTERNAL}/tenants/{tenant}/users", params={"email": email})
    user_id: str = r.json()[0]["id"]
    return user_id


async def login(
    client: httpx.AsyncClient, email: str = EMAIL, password: str = PASSWORD, **body: Any
) -> str:
    """Log in with Basic credentials; return the token."""
    r = await client.post(LOGIN, auth=(email, password), json=body or None)
    assert r.status_code == 200, r.text
    return r.text


async def verify(client: httpx.AsyncClient, token: str, method: str = "GET") -> httpx.Response:
    """Ask the verify endpoint about a token, as the gateway does."""
    return await client.request(method, VERIFY, headers={**bearer(token), **FORWARDED})


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> tuple[str, str]:
    """A user and a login token of theirs: (user id, token)."""
    user_id = await create_user(client)
    return user_id, await login(client)
