"""Management API: UI settings with ETags, personal access tokens, plans."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document
from services.useradm.main import create_app
from tests.conftest import ClientFactory
from tests.toolkit import assert_error
from tests.useradm.conftest import (
    MGMT_V1,
    bearer,
    claims_of,
    create_user,
    header_of,
    login,
    make_settings,
    verify,
)

SETTINGS = f"{MGMT_V1}/settings"
MY_SETTINGS = f"{MGMT_V1}/settings/me"
TOKENS = f"{MGMT_V1}/settings/tokens"

UI_SETTINGS: dict[str, Any] = {
    "columnSelection": [{"id": "inventory-device_type", "key": "device_type"}],
    "onboarding": {"complete": False, "showTips": True},
    "2fa": "disabled",
    "id_attribute": {"attribute": "mac", "scope": "identity"},
    "a.b": {"$weird": 1.5},
}


@pytest.mark.parametrize("path", [SETTINGS, MY_SETTINGS])
class TestSettings:
    async def test_empty_before_first_save(
        self, client: httpx.AsyncClient, admin: tuple[str, str], path: str
    ) -> None:
        _, token = admin
        r = await client.get(path, headers=bearer(token))
        assert r.status_code == 200
        assert r.json() == {}
        assert "ETag" not in r.headers

    async def test_save_then_read_with_etag(
        self, client: httpx.AsyncClient, admin: tuple[str, str], path: str
    ) -> None:
        _, token = admin
        r = await client.post(path, json=UI_SETTINGS, headers=bearer(token))
        assert r.status_code == 201, r.text
        assert r.content == b""

        r = await client.get(path, headers=bearer(token))
        assert r.status_code == 200
        assert r.json() == UI_SETTINGS
        etag = r.headers["ETag"]

        # The web UI posts back with If-Match = the ETag it read.
        r = await client.post(
            path,
            json={"onboarding": {"complete": True}},
            headers={**bearer(token), "If-Match": etag},
        )
        assert r.status_code == 201, r.text
        r = await client.get(path, headers=bearer(token))
        assert r.json() == {"onboarding": {"complete": True}}
        assert r.headers["ETag"] != etag

    async def test_stale_etag(
        self, client: httpx.AsyncClient, admin: tuple[str, str], path: str
    ) -> None:
        _, token = admin
        await client.post(path, json={"a": 1}, headers=bearer(token))
        etag = (await client.get(path, headers=bearer(token))).headers["ETag"]
        await client.post(path, json={"a": 2}, headers={**bearer(token), "If-Match": etag})

        r = await client.post(path, json={"a": 3}, headers={**bearer(token), "If-Match": etag})

        assert_error(r, 412, "ETag")
        assert (await client.get(path, headers=bearer(token))).json() == {"a": 2}

    async def test_quoted_etag(
        self, client: httpx.AsyncClient, admin: tuple[str, str], path: str
    ) -> None:
        _, token = admin
        await client.post(path, json={"a": 1}, headers=bearer(token))
        etag = (await client.get(path, headers=bearer(token))).headers["ETag"]
        r = await client.post(
            path, json={"a": 2}, headers={**bearer(token), "If-Match": f'"{etag}"'}
        )
        assert r.status_code == 201
        assert (await client.get(path, headers=bearer(token))).json() == {"a": 2}

    async def test_if_match_before_anything_is_stored(
        self, client: httpx.AsyncClient, admin: tuple[str, str], path: str
    ) -> None:
        _, token = admin
        r = await client.post(
            path, json={"a": 1}, headers={**bearer(token), "If-Match": "whatever"}
        )
        assert r.status_code == 201
        assert (await client.get(path, headers=bearer(token))).json() == {"a": 1}

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            (b"[1, 2]", 400),
            (b'"text"', 400),
            (b"{broken", 400),
            (b'{"n": NaN}', 400),
            (b'{"n": [1, {"m": Infinity}]}', 400),
            (json.dumps({f"k{i}": i for i in range(1025)}).encode(), 400),
            (json.dumps({"k" * 128: 1}).encode(), 400),
            (json.dumps({"k": "v" * 4096}).encode(), 400),
            (b"[" * 5000 + b"]" * 5000, 400),
        ],
    )
    async def test_invalid_body(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        path: str,
        body: bytes,
        status: int,
    ) -> None:
        _, token = admin
        r = await client.post(
            path, content=body, headers={**bearer(token), "Content-Type": "application/json"}
        )
        assert_error(r, status)
        assert (await client.get(path, headers=bearer(token))).json() == {}

    async def test_without_token(self, client: httpx.AsyncClient, path: str) -> None:
        assert_error(await client.get(path), 401)
        assert_error(await client.post(path, json={}), 401)


class TestSettingsScope:
    async def test_own_settings_are_per_user_and_tenant_settings_shared(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        admin_id, token = admin
        other_id = await create_user(client, "second@example.com")
        other = await login(client, "second@example.com")
        await client.post(MY_SETTINGS, json={"mine": True}, headers=bearer(token))
        await client.post(SETTINGS, json={"shared": True}, headers=bearer(token))

        assert (await client.get(MY_SETTINGS, headers=bearer(other))).json() == {}
        assert (await client.get(SETTINGS, headers=bearer(other))).json() == {"shared": True}
        stored = await db["user_settings"].find_one({"user_id": admin_id})
        assert stored is not None
        assert stored["tenant_id"] == ""
        assert json.loads(stored["values"]) == {"mine": True}
        assert await db["user_settings"].find_one({"user_id": other_id}) is None

    async def test_tenants_do_not_share(
        self, client: httpx.AsyncClient, admin: tuple[str, str], signing_key: Any
    ) -> None:
        _, token = admin
        await client.post(SETTINGS, json={"shared": True}, headers=bearer(token))
        foreign = signing_key.sign(
            {"sub": "u-b", "jti": "j", "mender.user": True, "mender.tenant": "tenant-b"}
        )
        assert (await client.get(SETTINGS, headers=bearer(foreign))).json() == {}


class TestCreatePersonalToken:
    async def test_issues_a_named_token(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        admin_id, token = admin
        before = int(time.time())

        r = await client.post(
            TOKENS, json={"name": "ci", "expires_in": 3600}, headers=bearer(token)
        )

        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/jwt"
        pat = r.text
        claims = claims_of(pat)
        assert header_of(pat)["kid"] == 1
        assert claims["sub"] == admin_id
        assert claims["scp"] == "mender.*"
        assert claims["mender.user"] is True
        assert before <= claims["iat"]
        assert claims["exp"] == claims["iat"] + 3600
        stored = await db["tokens"].find_one({"_id": claims["jti"]})
        assert stored is not None
        assert stored["name"] == "ci"
        assert stored["sub"] == admin_id
        assert (await verify(client, pat)).status_code == 200
        # The token works like a login token.
        assert (await client.get(f"{MGMT_V1}/users/me", headers=bearer(pat))).status_code == 200

    async def test_never_expires(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        for body in ({"name": "forever"}, {"name": "zero", "expires_in": 0}):
            r = await client.post(TOKENS, json=body, headers=bearer(token))
            assert r.status_code == 200
            assert "exp" not in claims_of(r.text)
            assert (await verify(client, r.text)).status_code == 200

    async def test_duplicate_name(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        assert (
            await client.post(TOKENS, json={"name": "ci"}, headers=bearer(token))
        ).status_code == 200
        r = await client.post(TOKENS, json={"name": "ci"}, headers=bearer(token))
        assert_error(r, 409, "already exists")

    async def test_same_name_for_another_user(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        admin_id, token = admin
        other_id = await create_user(client, "second@example.com")
        other = await login(client, "second@example.com")
        assert (
            await client.post(TOKENS, json={"name": "ci"}, headers=bearer(token))
        ).status_code == 200
        assert (
            await client.post(TOKENS, json={"name": "ci"}, headers=bearer(other))
        ).status_code == 200
        owners = await db["tokens"].distinct("sub", {"name": "ci"})
        assert sorted(owners) == sorted([admin_id, other_id])

    async def test_limit(
        self,
        mongo_url: str,
        db_name: str,
        key_path: Path,
        asgi_client: ClientFactory,
    ) -> None:
        settings = make_settings(mongo_url, db_name, key_path, limit_tokens_per_user=2)
        async with asgi_client(create_app(settings)) as client:
            await create_user(client)
            token = await login(client)
            for name in ("a", "b"):
                r = await client.post(TOKENS, json={"name": name}, headers=bearer(token))
                assert r.status_code == 200
            r = await client.post(TOKENS, json={"name": "c"}, headers=bearer(token))
            assert_error(r, 422, "maximum number")
            # Login tokens do not count.
            assert len((await client.get(TOKENS, headers=bearer(token))).json()) == 2

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({}, "name"),
            ({"name": ""}, "name: cannot be blank"),
            ({"name": "n" * 4096}, "name"),
            ({"name": 5}, "name"),
            ({"name": "ci", "expires_in": -1}, "no less than 0"),
            ({"name": "ci", "expires_in": 31536001}, "no greater than 31536000"),
            ({"name": "ci", "expires_in": "3600"}, "expires_in"),
            ({"name": "ci", "expires_in": 1.5}, "expires_in"),
            ({"name": "ci", "scope": "mender.*"}, "scope"),
        ],
    )
    async def test_invalid(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        db: AsyncDatabase[Document],
        body: dict[str, Any],
        fragment: str,
    ) -> None:
        _, token = admin
        assert_error(await client.post(TOKENS, json=body, headers=bearer(token)), 400, fragment)
        assert await db["tokens"].count_documents({"name": {"$exists": True}}) == 0


class TestListPersonalTokens:
    async def test_lists_own_tokens_only(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        first = (
            await client.post(TOKENS, json={"name": "ci", "expires_in": 60}, headers=bearer(token))
        ).text
        second = (await client.post(TOKENS, json={"name": "forever"}, headers=bearer(token))).text
        await create_user(client, "second@example.com")
        other = await login(client, "second@example.com")
        await client.post(TOKENS, json={"name": "theirs"}, headers=bearer(other))
        used = datetime.now(UTC) - timedelta(hours=1)
        await db["tokens"].update_one(
            {"_id": claims_of(first)["jti"]}, {"$set": {"last_used": used}}
        )

        r = await client.get(TOKENS, headers=bearer(token))

        assert r.status_code == 200
        listed = r.json()
        assert [t["name"] for t in listed] == ["ci", "forever"]
        assert listed[0]["id"] == claims_of(first)["jti"]
        assert set(listed[0]) == {"id", "name", "created_ts", "expiration_date", "last_used"}
        assert set(listed[1]) == {"id", "name", "created_ts"}
        assert listed[1]["id"] == claims_of(second)["jti"]
        expiry = datetime.fromisoformat(listed[0]["expiration_date"])
        assert expiry == datetime.fromtimestamp(claims_of(first)["exp"], UTC)
        assert "token" not in json.dumps(listed)


class TestRevokePersonalToken:
    async def test_revoked_token_stops_verifying(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        pat = (await client.post(TOKENS, json={"name": "ci"}, headers=bearer(token))).text
        jti = claims_of(pat)["jti"]

        r = await client.delete(f"{TOKENS}/{jti}", headers=bearer(token))

        assert r.status_code == 204
        assert await db["tokens"].find_one({"_id": jti}) is None
        assert_error(await verify(client, pat), 401)
        assert (await client.get(TOKENS, headers=bearer(token))).json() == []

    async def test_token_of_another_user_is_untouched(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        await create_user(client, "second@example.com")
        other = await login(client, "second@example.com")
        theirs = (await client.post(TOKENS, json={"name": "x"}, headers=bearer(other))).text
        r = await client.delete(f"{TOKENS}/{claims_of(theirs)['jti']}", headers=bearer(token))
        assert r.status_code == 204
        assert (await verify(client, theirs)).status_code == 200
        listed = (await client.get(TOKENS, headers=bearer(other))).json()
        assert [t["name"] for t in listed] == ["x"]

    async def test_absent(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        await client.post(TOKENS, json={"name": "kept"}, headers=bearer(token))
        r = await client.delete(f"{TOKENS}/nothing", headers=bearer(token))
        assert r.status_code == 204
        assert r.content == b""
        listed = (await client.get(TOKENS, headers=bearer(token))).json()
        assert [t["name"] for t in listed] == ["kept"]


class TestPlans:
    async def test_no_plans(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        r = await client.get(f"{MGMT_V1}/plans", headers=bearer(token))
        assert r.status_code == 200
        assert r.json() == []

    @pytest.mark.parametrize("params", [{"page": "0"}, {"per_page": "501"}, {"page": "x"}])
    async def test_bad_paging(
        self, client: httpx.AsyncClient, admin: tuple[str, str], params: dict[str, str]
    ) -> None:
        _, token = admin
        r = await client.get(f"{MGMT_V1}/plans", params=params, headers=bearer(token))
        assert_error(r, 400)


class TestPlanBinding:
    async def test_empty_plan(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        r = await client.get(f"{MGMT_V1}/plan_binding", headers=bearer(token))
        assert r.status_code == 200
        assert r.json() == {"plan": {"name": "", "display_name": "", "features": None}}

    async def test_without_token(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(f"{MGMT_V1}/plan_binding"), 401)
