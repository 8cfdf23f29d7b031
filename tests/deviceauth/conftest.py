"""Fixtures of the deviceauth tests: server keys, device keys, signed auth requests, apps."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from common.core.mongo import Document
from common.core.tokens import generate_key_file
from services.deviceauth.config import Settings
from services.deviceauth.main import create_app
from tests.conftest import ClientFactory
from tests.toolkit import ManualClock

AUTH_REQUESTS = "/api/devices/v1/authentication/auth_requests"
MGMT = "/api/management/v2/devauth"
INTERNAL = "/api/internal/v1/devauth"

PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | dsa.DSAPrivateKey
)


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def user_token(tenant: str = "", sub: str = "user-1") -> str:
    """A user token as services see it behind the gateway (claims only, not verified)."""
    claims: dict[str, Any] = {"sub": sub, "mender.user": True, "jti": "j"}
    if tenant:
        claims["mender.tenant"] = tenant
    return f"{_b64url({'alg': 'RS256', 'typ': 'JWT'})}.{_b64url(claims)}.c2ln"


USER = {"Authorization": f"Bearer {user_token()}"}


def generate_device_key(kind: str) -> PrivateKey:
    """A new private key of one of the kinds devices use (plus DSA, which they may not)."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "dsa":
        return dsa.generate_private_key(key_size=1024)
    curves: dict[str, ec.EllipticCurve] = {
        "p224": ec.SECP224R1(),
        "p256": ec.SECP256R1(),
        "p384": ec.SECP384R1(),
        "p521": ec.SECP521R1(),
    }
    return ec.generate_private_key(curves[kind])


def sign(key: PrivateKey, body: bytes) -> str:
    """Sign a body the way the Mender client does, base64-encoded."""
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(body, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(body)
    else:
        raw = key.sign(body, hashes.SHA256())
    return base64.b64encode(raw).decode()


def public_pem(key: PrivateKey) -> str:
    """The SubjectPublicKeyInfo PEM of a private key."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class FakeDevice:
    """A device: identity data and a key pair; builds signed auth requests."""

    key: PrivateKey
    identity: dict[str, Any] = field(default_factory=lambda: {"mac": "02:00:00:00:00:01"})

    @property
    def pubkey(self) -> str:
        """The device's public key (PEM)."""
        return public_pem(self.key)

    def body(self, id_data: str | None = None) -> bytes:
        """The auth request body, in the field order and framing the Mender client uses."""
        text = id_data if id_data is not None else json.dumps(self.identity, sort_keys=True)
        doc = {"id_data": text, "tenant_token": "", "pubkey": self.pubkey}
        return json.dumps(doc).encode() + b"\n"

    async def authenticate(
        self, client: httpx.AsyncClient, *, id_data: str | None = None
    ) -> httpx.Response:
        """Send a correctly signed auth request."""
        body = self.body(id_data)
        return await client.post(
            AUTH_REQUESTS,
            content=body,
            headers={"Content-Type": "application/json", "X-MEN-Signature": sign(self.key, body)},
        )


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of server signing keys (RSA and Ed25519)."""
    path = tmp_path_factory.mktemp("deviceauth-keys")
    generate_key_file(path / "rsa.pem")
    generate_key_file(path / "ed25519.pem", "ed25519")
    generate_key_file(path / "old.pem")
    return path


_KEYS: dict[str, PrivateKey] = {}


@pytest.fixture(scope="session")
def device_key() -> Callable[[str], PrivateKey]:
    """Device keys by kind, generated once per session (`rsa3072`, `p256`, `ed25519`, …)."""

    def get(kind: str) -> PrivateKey:
        if kind not in _KEYS:
            _KEYS[kind] = generate_device_key(kind)
        return _KEYS[kind]

    return get


@pytest.fixture
def make_settings(mongo_url: str, db_name: str, key_dir: Path) -> Callable[..., Settings]:
    """Settings for a test app on the test's fresh database (overrides as keywords)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mongo_url": mongo_url,
            "mongo_db": db_name,
            "dev_mode": True,
            "server_priv_key_path": key_dir / "rsa.pem",
            "outbox_poll_interval": 0.2,
            **overrides,
        }
        return Settings(**values)

    return make


# Every peer deployed where nothing answers: their effects stay queued for a test to inspect.
_PEERS_AWAY: Final = {
    f"{peer}_addr": "http://127.0.0.1:1"
    for peer in (
        "inventory",
        "deployments",
        "deviceconnect",
        "deviceconfig",
        "iot_manager",
        "devicemonitor",
    )
}


@pytest.fixture
def app(make_settings: Callable[..., Settings], clock: ManualClock) -> FastAPI:
    """A deviceauth app whose peers are all deployed but never answer, on a hand-moved clock."""
    return create_app(make_settings(**_PEERS_AWAY), clock=clock.now)


@pytest.fixture
async def client(app: FastAPI, asgi_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, with its lifespan running."""
    async with asgi_client(app) as c:
        yield c


Records = AsyncCollection[Document]


@pytest.fixture
def device_records(mongo: AsyncMongoClient[Document], db_name: str) -> Records:
    """The raw `devices` collection of the test's database, to check what was stored."""
    return mongo[db_name]["devices"]


@pytest.fixture
def device(device_key: Callable[[str], PrivateKey]) -> FakeDevice:
    """A device with an ECDSA P-256 key (fast to generate) and a MAC identity."""
    return FakeDevice(device_key("p256"))


async def list_devices(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """The device list of the management API."""
    r = await client.get(f"{MGMT}/devices", params=params, headers=USER)
    assert r.status_code == 200, r.text
    devices: list[dict[str, Any]] = r.json()
    return devices


async def register(client: httpx.AsyncClient, device: FakeDevice) -> dict[str, Any]:
    """First contact of a device; return its management view (pending)."""
    r = await device.authenticate(client)
    assert r.status_code == 401, r.text
    devices = [d for d in await list_devices(client) if d["identity_data"] == device.identity]
    assert len(devices) == 1
    return devices[0]


async def set_status(
    client: httpx.AsyncClient, device_id: str, auth_id: str, status: str
) -> httpx.Response:
    """Change an auth set's status through the management API."""
    return await client.put(
        f"{MGMT}/devices/{device_id}/auth/{auth_id}/status",
        json={"status": status},
        headers=USER,
    )


async def admit(client: httpx.AsyncClient, device: FakeDevice) -> tuple[str, str, str]:
    """Register and accept a device; return (device id, auth set id, token)."""
    view = await register(client, device)
    auth_id = view["auth_sets"][0]["id"]
    r = await set_status(client, view["id"], auth_id, "accepted")
    assert r.status_code == 204, r.text
    r = await device.authenticate(client)
    assert r.status_code == 200, r.text
    return view["id"], auth_id, r.text


async def verify(client: httpx.AsyncClient, token: str, method: str = "GET") -> httpx.Response:
    """Ask the internal verify endpoint about a token."""
    return await client.request(
        method, f"{INTERNAL}/tokens/verify", headers={"Authorization": f"Bearer {token}"}
    )
