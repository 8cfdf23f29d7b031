"""The keys and the revocation feed the gateway reads: every change that invalidates a token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from common.core.tokens import TokenVerifier, load_signing_key, verifying_key_from_jwk
from tests.deviceauth.conftest import (
    INTERNAL,
    MGMT,
    USER,
    FakeDevice,
    admit,
    set_status,
)
from tests.toolkit import ManualClock, assert_error

FEED = f"{INTERNAL}/tokens/revocations"
HEADER = "X-Fleetport-Revocations"


async def _feed(client: httpx.AsyncClient, after: int = 0, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(FEED, params={"after": after, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["more"] is False
    entries: list[dict[str, Any]] = body["revocations"]
    return entries


def _jti(token: str) -> str:
    jti: str = jwt.decode(token, options={"verify_signature": False})["jti"]
    return jti


class TestKeys:
    async def test_the_signing_key_as_a_jwk(self, client: httpx.AsyncClient, key_dir: Path) -> None:
        r = await client.get(f"{INTERNAL}/tokens/keys")
        assert r.status_code == 200
        [jwk] = r.json()["keys"]
        assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
        assert "kid" not in jwk  # device tokens name no key
        assert set(jwk) == {"kty", "n", "e", "alg", "use", "key_ops"}  # nothing private
        public = verifying_key_from_jwk(jwk).public_key
        expected = load_signing_key(key_dir / "rsa.pem").public_key
        pem = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        assert public.public_bytes(*pem) == expected.public_bytes(*pem)

    async def test_tokens_verify_with_it(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        _, _, token = await admit(client, device)
        keys = (await client.get(f"{INTERNAL}/tokens/keys")).json()["keys"]
        claims = TokenVerifier([verifying_key_from_jwk(k) for k in keys]).verify(token)
        assert claims["mender.device"] is True


class TestFeed:
    async def test_empty(self, client: httpx.AsyncClient) -> None:
        assert await _feed(client) == []

    async def test_bad_parameters(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(FEED, params={"after": -1}), 400, "after")
        assert_error(await client.get(FEED, params={"wait": 11}), 400, "wait")

    async def test_token_deleted(
        self, client: httpx.AsyncClient, device: FakeDevice, clock: ManualClock
    ) -> None:
        _, auth_id, token = await admit(client, device)
        r = await client.delete(f"{MGMT}/tokens/{_jti(token)}", headers=USER)
        assert r.status_code == 204
        [entry] = await _feed(client)
        assert entry["key"] == f"jti:{auth_id}"
        # Every token issued so far is refused, until the last one would have expired.
        assert entry["not_before"] == int(clock.time()) + 1
        assert entry["expires"] == jwt.decode(token, options={"verify_signature": False})["exp"]
        # The answer names the sequence number, for the gateway relaying it.
        assert r.headers[HEADER] == str(entry["seq"])

    async def test_a_token_issued_again_is_dated_after_it(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        _, _, token = await admit(client, device)
        await client.delete(f"{MGMT}/tokens/{_jti(token)}", headers=USER)
        [entry] = await _feed(client)
        r = await device.authenticate(client)
        assert r.status_code == 200
        renewed = jwt.decode(r.text, options={"verify_signature": False})
        # Within the same second as the revocation: dated at its end, so it is not refused.
        assert renewed["iat"] >= entry["not_before"]
        assert renewed["exp"] - renewed["iat"] == 604800

    async def test_rejected(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        device_id, auth_id, _ = await admit(client, device)
        r = await set_status(client, device_id, auth_id, "rejected")
        assert r.status_code == 204
        assert [e["key"] for e in await _feed(client)] == [f"jti:{auth_id}"]
        assert r.headers[HEADER] == "1"

    async def test_decommissioned(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        device_id, auth_id, _ = await admit(client, device)
        r = await client.delete(f"{MGMT}/devices/{device_id}", headers=USER)
        assert r.status_code == 204
        assert [e["key"] for e in await _feed(client)] == [f"jti:{auth_id}"]

    async def test_auth_set_dismissed(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        device_id, auth_id, _ = await admit(client, device)
        r = await client.delete(f"{MGMT}/devices/{device_id}/auth/{auth_id}", headers=USER)
        assert r.status_code == 204
        assert [e["key"] for e in await _feed(client)] == [f"jti:{auth_id}"]

    async def test_internal_deletions(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Any
    ) -> None:
        device_id, auth_id, _ = await admit(client, device)
        r = await client.delete(
            f"{INTERNAL}/tokens", params={"tenant_id": "", "device_id": device_id}
        )
        assert r.status_code == 204
        assert [e["key"] for e in await _feed(client)] == [f"jti:{auth_id}"]
        await device.authenticate(client)  # a token again
        r = await client.delete(f"{INTERNAL}/tokens", params={"tenant_id": ""})
        assert r.status_code == 204
        entries = await _feed(client, after=1)
        # A whole tenant: one revocation of its key.
        assert [(e["seq"], e["key"]) for e in entries] == [(2, "tenant:")]

    async def test_nothing_revoked_nothing_recorded(self, client: httpx.AsyncClient) -> None:
        r = await client.delete(f"{INTERNAL}/tokens", params={"tenant_id": ""})
        assert r.status_code == 204
        assert HEADER not in r.headers
        assert await _feed(client) == []

    async def test_after_and_long_poll(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        _, auth_id, token = await admit(client, device)
        waiting = asyncio.create_task(_feed(client, wait=10))
        r = await client.delete(f"{MGMT}/tokens/{_jti(token)}", headers=USER)
        assert r.status_code == 204
        entries = await asyncio.wait_for(waiting, 5)
        assert [e["key"] for e in entries] == [f"jti:{auth_id}"]
        assert await _feed(client, after=entries[-1]["seq"]) == []


class TestTokenUse:
    async def test_a_device_checks_in(
        self, client: httpx.AsyncClient, device: FakeDevice, device_records: Any
    ) -> None:
        device_id, auth_id, _ = await admit(client, device)
        await device_records.update_one({"_id": device_id}, {"$unset": {"check_in_time": 1}})
        uses = [{"tenant_id": "", "sub": device_id, "jti": auth_id}] * 2
        r = await client.post(f"{INTERNAL}/tokens/used", json={"tokens": uses})
        assert r.status_code == 204
        stored = await device_records.find_one({"_id": device_id})
        assert stored is not None
        assert stored["check_in_time"] is not None

    async def test_unknown_devices_are_ignored(
        self, client: httpx.AsyncClient, device_records: Any
    ) -> None:
        uses = [{"tenant_id": "", "sub": "gone", "jti": "gone"}]
        r = await client.post(f"{INTERNAL}/tokens/used", json={"tokens": uses})
        assert r.status_code == 204
        assert await device_records.count_documents({}) == 0

    async def test_bad_report(self, client: httpx.AsyncClient) -> None:
        r = await client.post(f"{INTERNAL}/tokens/used", json={"tokens": [{"sub": "x"}]})
        assert_error(r, 400, "tenant_id")
