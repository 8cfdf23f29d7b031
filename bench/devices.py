"""Real devices for the benchmarks: preauthorized, then authenticated with a signed request.

The request is laid out and signed by the tests' device simulator (`tests.toolkit.devices`),
so benchmarks and tests send exactly what the Mender client sends.
"""

from __future__ import annotations

from typing import Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.toolkit.devices import AUTH_REQUESTS, device_id_of, public_key_pem, signed_auth_request

PREAUTHORIZE: Final = "/api/management/v2/devauth/devices"


async def register_device(
    session: aiohttp.ClientSession, base: str, admin: str, index: int
) -> tuple[str, str]:
    """Preauthorize a device with a new Ed25519 key and authenticate it; (id, JWT)."""
    key = ed25519.Ed25519PrivateKey.generate()
    identity = {"mac": f"02:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}:01"}
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
