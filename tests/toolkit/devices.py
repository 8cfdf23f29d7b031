"""Simulated devices: the device API driven as the Mender client drives it.

`signed_auth_request` lays out and signs an auth request exactly as the client does (the
deviceauth, end-to-end and fault tests and the benchmarks all build theirs with it);
`SimulatedDevice` is a whole device over an `httpx.AsyncClient`: its own Ed25519 key, the
signed auth request, inventory reports, deployment polls and status reports, each retried
through a `Retrying` as the client retries (a refused connection or a 5xx is tried again
after a pause, any other unexpected answer fails the test).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = [
    "AUTH_REQUESTS",
    "DEVICE_INVENTORY",
    "NEXT_V2",
    "DeviceKey",
    "Retrying",
    "SimulatedDevice",
    "device_id_of",
    "public_key_pem",
    "signed_auth_request",
    "status_url",
]

AUTH_REQUESTS: Final = "/api/devices/v1/authentication/auth_requests"
DEVICE_INVENTORY: Final = "/api/devices/v1/inventory/device/attributes"
NEXT_V2: Final = "/api/devices/v2/deployments/device/deployments/next"
# How long the client waits before trying a failed request again (shortened for tests).
RETRY_PAUSE: Final = 0.2

# The key types a simulated device may hold (the client's defaults: RSA-2048 or Ed25519).
DeviceKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def status_url(deployment_id: str) -> str:
    """Where a device reports its status in a deployment."""
    return f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status"


def public_key_pem(key: DeviceKey) -> str:
    """The SubjectPublicKeyInfo PEM of a device key, as the client sends it."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _signature(key: DeviceKey, body: bytes) -> bytes:
    """The client's signature of a body: Ed25519, or PKCS#1 v1.5 over SHA-256 with RSA."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(body)


def signed_auth_request(
    key: DeviceKey, identity: Mapping[str, str], *, tenant_token: str = ""
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an auth request, laid out and signed as the client does."""
    id_data = json.dumps(dict(identity), separators=(",", ":"), sort_keys=True)
    fields = {"id_data": id_data, "tenant_token": tenant_token, "pubkey": public_key_pem(key)}
    body = (json.dumps(fields) + "\n").encode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer",
        "X-MEN-Signature": base64.b64encode(_signature(key, body)).decode(),
    }
    return body, headers


def device_id_of(token: str) -> str:
    """The device id (`sub`) of a device JWT."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


class Retrying:
    """Sends requests until they are answered as expected, counting what it took.

    A transport error (the process died under the request, or is not back yet) or a 5xx is
    tried again after a pause, as the Mender client does; any other answer that is not
    expected fails at once, and so does a request still failing after `within` seconds.
    """

    def __init__(self, *, pause: float = RETRY_PAUSE, within: float = 150.0) -> None:
        self.pause = pause
        self.within = within
        self.answered = 0
        self.failed = 0

    async def until(
        self, send: Callable[[], Awaitable[httpx.Response]], *expected: int
    ) -> httpx.Response:
        """The first answer with one of the `expected` statuses."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.within
        while True:
            try:
                response: httpx.Response | None = await send()
                error = ""
            except httpx.TransportError as exc:
                response, error = None, repr(exc)
            if response is not None:
                if response.status_code in expected:
                    self.answered += 1
                    return response
                method, path = response.request.method, response.request.url.path
                error = f"{method} {path}: {response.status_code}: {response.text}"
                if response.status_code < 500:
                    raise AssertionError(error)
            self.failed += 1
            if loop.time() > deadline:
                raise AssertionError(f"still failing after {self.within:g} s: {error}")
            await asyncio.sleep(self.pause)


class SimulatedDevice:
    """One device with its own key, talking to the server through `http`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        identity: Mapping[str, str],
        *,
        retrying: Retrying,
        device_type: str = "sim-device",
        artifact_name: str = "sim-1.0",
    ) -> None:
        self.http = http
        self.identity = dict(identity)
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.pubkey = public_key_pem(self.key)
        self.retrying = retrying
        self.device_type = device_type
        self.artifact_name = artifact_name
        self.token: str | None = None

    @property
    def id(self) -> str:
        """The device id the server gave it (known once it is authenticated)."""
        assert self.token is not None, "the device is not authenticated"
        return device_id_of(self.token)

    def _auth(self) -> dict[str, str]:
        assert self.token is not None, "the device is not authenticated"
        return {"Authorization": f"Bearer {self.token}"}

    async def authenticate(self) -> str:
        """Send signed auth requests until the server issues a token; the token."""
        body, headers = signed_auth_request(self.key, self.identity)
        response = await self.retrying.until(
            lambda: self.http.post(AUTH_REQUESTS, content=body, headers=headers), 200
        )
        self.token = response.text
        return self.token

    async def report_inventory(self, attributes: Mapping[str, str]) -> None:
        """Report inventory attributes (the client's periodic inventory update)."""
        body = [{"name": name, "value": value} for name, value in attributes.items()]
        await self.retrying.until(
            lambda: self.http.patch(DEVICE_INVENTORY, json=body, headers=self._auth()), 200
        )

    async def poll(self) -> dict[str, Any] | None:
        """Ask for a deployment (`POST v2 …/next`); the deployment offered, or None."""
        body = {
            "device_provides": {
                "artifact_name": self.artifact_name,
                "device_type": self.device_type,
            }
        }
        response = await self.retrying.until(
            lambda: self.http.post(NEXT_V2, json=body, headers=self._auth()), 200, 204
        )
        return response.json() if response.status_code == 200 else None

    async def report(self, deployment_id: str, status: str) -> None:
        """Report the device's status in a deployment."""
        url = status_url(deployment_id)
        await self.retrying.until(
            lambda: self.http.put(url, json={"status": status}, headers=self._auth()), 204
        )
