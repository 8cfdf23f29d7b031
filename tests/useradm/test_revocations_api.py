"""The keys and the revocation feed the gateway reads: every change that invalidates a token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from common.core.revocations import NEVER
from common.core.tokens import TokenVerifier, verifying_key_from_jwk
from services.useradm.main import create_app
from tests.conftest import ClientFactory
from tests.useradm.conftest import (
    INTERNAL,
    LOGOUT,
    MGMT_V1,
    USERS,
    bearer,
    claims_of,
    create_user,
    login,
    make_settings,
)

FEED = f"{INTERNAL}/tokens/revocations"
HEADER = "X-Fleetport-Revocations"
TOKENS = f"{MGMT_V1}/settings/tokens"


async def _keys(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get(f"{INTERNAL}/tokens/keys")
    assert r.status_code == 200
    keys: list[dict[str, Any]] = r.json()["keys"]
    return keys


async def _revoked(client: httpx.AsyncClient, after: int = 0) -> list[str]:
    r = await client.get(FEED, params={"after": after})
    assert r.status_code == 200
    return [e["key"] for e in r.json()["revocations"]]


class TestKeys:
    async def test_the_signing_key_with_its_id(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        [jwk] = await _keys(client)
        assert jwk["kid"] == "1"  # from `private.id.1.pem`
        claims = TokenVerifier([verifying_key_from_jwk(jwk)], require=("sub", "jti")).verify(token)
        assert claims["mender.user"] is True


class TestFeed:
    async def test_logout(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        r = await client.post(LOGOUT, headers=bearer(token))
        assert r.status_code == 202
        assert await _revoked(client) == [f"jti:{claims_of(token)['jti']}"]
        assert r.headers[HEADER] == "1"
        entry = (await client.get(FEED)).json()["revocations"][0]
        assert entry["expires"] == claims_of(token)["exp"]

    async def test_personal_access_token_deleted(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        pat = await client.post(TOKENS, json={"name": "ci"}, headers=bearer(token))
        assert pat.status_code == 200
        jti = claims_of(pat.text)["jti"]
        r = await client.delete(f"{TOKENS}/{jti}", headers=bearer(token))
        assert r.status_code == 204
        entries = (await client.get(FEED)).json()["revocations"]
        assert [e["key"] for e in entries] == [f"jti:{jti}"]
        # A token that never expires is refused for good.
        assert entries[0]["expires"] == int(NEVER.timestamp())

    async def test_user_deleted(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        other = await create_user(client, email="other@example.com")
        theirs = await login(client, email="other@example.com")
        r = await client.delete(f"{USERS}/{other}", headers=bearer(token))
        assert r.status_code == 204
        assert await _revoked(client) == [f"jti:{claims_of(theirs)['jti']}"]

    async def test_password_changed(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        user_id, token = admin
        other_session = await login(client)
        r = await client.put(
            f"{USERS}/{user_id}",
            json={"password": "another-long-password", "current_password": "correct-horse-battery"},
            headers=bearer(token),
        )
        assert r.status_code == 204, r.text
        # The other sessions end; the caller's own token survives.
        assert await _revoked(client) == [f"jti:{claims_of(other_session)['jti']}"]

    async def test_sessions_trimmed(
        self, mongo_url: str, db_name: str, key_path: Path, asgi_client: ClientFactory
    ) -> None:
        settings = make_settings(mongo_url, db_name, key_path, limit_sessions_per_user=1)
        async with asgi_client(create_app(settings)) as client:
            await create_user(client)
            first = await login(client)
            await login(client)
            assert await _revoked(client) == [f"jti:{claims_of(first)['jti']}"]

    async def test_tenant_tokens_revoked(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        r = await client.delete(f"{INTERNAL}/tokens", params={"tenant_id": ""})
        assert r.status_code == 204
        assert await _revoked(client) == ["tenant:"]
        entry = (await client.get(FEED)).json()["revocations"][0]
        # A login right after is dated no earlier than the revocation.
        assert claims_of(await login(client))["iat"] >= entry["not_before"]


class TestTokenUse:
    async def test_personal_access_token_last_used(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        user_id, token = admin
        pat = await client.post(TOKENS, json={"name": "ci"}, headers=bearer(token))
        jti = claims_of(pat.text)["jti"]
        uses = [
            {"tenant_id": "", "sub": user_id, "jti": jti},
            {"tenant_id": "", "sub": user_id, "jti": claims_of(token)["jti"]},
        ]
        r = await client.post(f"{INTERNAL}/tokens/used", json={"tokens": uses})
        assert r.status_code == 204
        [listed] = (await client.get(TOKENS, headers=bearer(token))).json()
        assert listed["last_used"] is not None
