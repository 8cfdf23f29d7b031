"""Devices for the benchmarks: real ones, preauthorized then authenticated with a signed
request; or just the unsigned token a service behind the gateway decodes."""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

PREAUTHORIZE: Final = "/api/management/v2/devauth/devices"
AUTH_REQUESTS: Final = "/api/devices/v1/authentication/auth_requests"


def unsigned_token(claims: dict[str, Any]) -> str:
    """A well-formed JWT with these claims and no valid signature: what a service behind the
    gateway accepts (it decodes tokens, the gateway verifies them)."""

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


async def register_device(
    session: aiohttp.ClientSession, base: str, admin: str, index: int
) -> tuple[str, str]:
    """Preauthorize a device with a new Ed25519 key and authenticate it; (id, JWT)."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    identity = {"mac": f"02:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}:01"}
    async with session.post(
        base + PREAUTHORIZE,
        json={"identity_data": identity, "pubkey": pem},
        headers={"Authorization": f"Bearer {admin}"},
    ) as response:
        if response.status != 201:
            raise RuntimeError(f"preauthorize answered {response.status}: {await response.text()}")
    body = (
        json.dumps({"id_data": json.dumps(identity), "tenant_token": "", "pubkey": pem}) + "\n"
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-MEN-Signature": base64.b64encode(key.sign(body)).decode(),
    }
    async with session.post(base + AUTH_REQUESTS, data=body, headers=headers) as response:
        token = await response.text()
        if response.status != 200:
            raise RuntimeError(f"auth request answered {response.status}: {token}")
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"]), token
