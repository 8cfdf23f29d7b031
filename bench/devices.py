"""Devices for the benchmarks: real ones, preauthorized then authenticated with a signed
request (laid out and signed by the tests' device simulator, `tests.toolkit.devices`, as the
Mender client does, with an Ed25519 or RSA-2048 key); or just the unsigned token a service
behind the gateway decodes."""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from common.localstack.launcher import Stack
from tests.toolkit.devices import (
    AUTH_REQUESTS,
    DeviceKey,
    device_id_of,
    public_key_pem,
    signed_auth_request,
)

PREAUTHORIZE: Final = "/api/management/v2/devauth/devices"


def create_admin(stack: Stack, admin: tuple[str, str]) -> None:
    """Create the benchmark's admin user (email, password) with `useradm create-user`."""
    created = stack.run_module(
        "useradm", "create-user", "--username", admin[0], "--password", admin[1]
    )
    if created.returncode != 0:
        raise RuntimeError(f"create-user failed: {created.stderr}")


def unsigned_token(claims: dict[str, Any]) -> str:
    """A well-formed JWT with these claims and no valid signature: what a service behind the
    gateway accepts (it decodes tokens, the gateway verifies them)."""

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def device_key(kind: str) -> DeviceKey:
    """A new device key: `ed25519` or `rsa` (2048 bits, the client's default)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def identity_of(index: int) -> dict[str, str]:
    """The identity data of the benchmark's device number `index` (a unique MAC)."""
    return {"mac": f"02:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}:01"}


async def register_device(
    session: aiohttp.ClientSession,
    base: str,
    admin: str,
    index: int,
    key: DeviceKey | None = None,
) -> tuple[str, str]:
    """Preauthorize a device with `key` (a new Ed25519 key by default) and authenticate it;
    (id, JWT)."""
    key = key or ed25519.Ed25519PrivateKey.generate()
    identity = identity_of(index)
    async with session.post(
        base + PREAUTHORIZE,
        json={"identity_data": identity, "pubkey": public_key_pem(key)},
        headers={"Authorization": f"Bearer {admin}"},
    ) as response:
        if response.status != 201:
            raise RuntimeError(f"preauthorize answered {response.status}: {await response.text()}")
    body, headers = signed_auth_request(key, identity)
    async with session.post(base + AUTH_REQUESTS, data=body, headers=headers) as response:
        token = await response.text()
        if response.status != 200:
            raise RuntimeError(f"auth request answered {response.status}: {token}")
    return device_id_of(token), token
