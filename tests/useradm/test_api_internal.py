"""Internal API: tenants, a tenant's users, bulk token revocation, health."""

from __future__ import annotations

from typing import Any

import bcrypt
import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document
from tests.toolkit import assert_error
from tests.useradm.conftest import (
    EMAIL,
    INTERNAL,
    LOGIN,
    PASSWORD,
    bearer,
    claims_of,
    create_user,
    login,
    verify,
)


class TestHealth:
    async def test_health_and_alive(self, client: httpx.AsyncClient) -> None:
        for probe in ("health", "alive"):
            r = await client.get(f"{INTERNAL}/{probe}")
            assert r.status_code == 204
            assert r.content == b""


class TestCreateTenant:
    async def test_created(self, client: httpx.AsyncClient, db: AsyncDatabase[Document]) -> None:
        for _ in range(2):  # idempotent
            r = await client.post(f"{INTERNAL}/tenants", json={"tenant_id": "t1"})
            assert r.status_code == 201, r.text
        stored = await db["tenants"].find({}).to_list()
        assert len(stored) == 1
        assert stored[0]["_id"] == stored[0]["tenant_id"] == "t1"

    @pytest.mark.parametrize(
        "body", [{}, {"tenant_id": ""}, {"tenant_id": 5}, {"tenant_id": "t", "plan": "x"}]
    )
    async def test_invalid(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        assert_error(await client.post(f"{INTERNAL}/tenants", json=body), 400)


class TestCreateTenantUser:
    async def test_in_a_tenant(
        self, client: httpx.AsyncClient, db: AsyncDatabase[Document]
    ) -> None:
        r = await client.post(
            f"{INTERNAL}/tenants/t1/users",
            json={"email": "Owner@Example.com", "password": PASSWORD, "propagate": False},
        )
        assert r.status_code == 201, r.text
        stored = await db["users"].find_one({"email": "owner@example.com"})
        assert stored is not None
        assert stored["tenant_id"] == "t1"

    async def test_default_tenant_with_empty_segment(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            f"{INTERNAL}/tenants//users", json={"email": EMAIL, "password": PASSWORD}
        )
        assert r.status_code == 201
        [user] = (await client.get(f"{INTERNAL}/tenants//users")).json()
        assert user["email"] == EMAIL
        r = await client.post(LOGIN, auth=(EMAIL, PASSWORD))
        assert r.status_code == 200
        assert claims_of(r.text)["sub"] == user["id"]
        assert "mender.tenant" not in claims_of(r.text)

    async def test_from_a_password_hash(
        self, client: httpx.AsyncClient, db: AsyncDatabase[Document]
    ) -> None:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        r = await client.post(
            f"{INTERNAL}/tenants//users", json={"email": EMAIL, "password_hash": hashed}
        )
        assert r.status_code == 201, r.text
        stored = await db["users"].find_one({"email": EMAIL})
        assert stored is not None
        assert stored["password"] == hashed
        r = await client.post(LOGIN, auth=(EMAIL, PASSWORD))
        assert r.status_code == 200
        assert claims_of(r.text)["sub"] == stored["_id"]

    async def test_duplicate_email(self, client: httpx.AsyncClient) -> None:
        await create_user(client, tenant="t1")
        r = await client.post(
            f"{INTERNAL}/tenants/t2/users", json={"email": EMAIL, "password": PASSWORD}
        )
        assert_error(r, 422, "user with a given email already exists")

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({"email": EMAIL}, "password"),
            ({"email": EMAIL, "password": PASSWORD, "password_hash": "$2b$"}, "password"),
            ({"email": EMAIL, "password_hash": "plain-text"}, "bcrypt"),
            ({"email": EMAIL, "password": "short"}, "minimum 8"),
            ({"email": "nope", "password": PASSWORD}, "email"),
            ({"email": EMAIL, "password": PASSWORD, "propagate": "yes"}, "propagate"),
            ({"email": EMAIL, "password": PASSWORD, "id": "chosen"}, "id"),
        ],
    )
    async def test_invalid(
        self,
        client: httpx.AsyncClient,
        db: AsyncDatabase[Document],
        body: dict[str, Any],
        fragment: str,
    ) -> None:
        r = await client.post(f"{INTERNAL}/tenants/t1/users", json=body)
        assert_error(r, 400, fragment)
        assert await db["users"].count_documents({}) == 0


class TestListTenantUsers:
    async def test_only_that_tenants_users(self, client: httpx.AsyncClient) -> None:
        mine = await create_user(client, "a@example.com", tenant="t1")
        await create_user(client, "b@example.com", tenant="t2")
        r = await client.get(f"{INTERNAL}/tenants/t1/users")
        assert r.status_code == 200
        assert [u["id"] for u in r.json()] == [mine]
        assert r.json()[0]["email"] == "a@example.com"
        assert "password" not in r.json()[0]
        assert (await client.get(f"{INTERNAL}/tenants/t3/users")).json() == []

    async def test_filters_and_bad_filter(self, client: httpx.AsyncClient) -> None:
        mine = await create_user(client, "a@example.com", tenant="t1")
        await create_user(client, "b@example.com", tenant="t1")
        r = await client.get(f"{INTERNAL}/tenants/t1/users", params={"id": mine})
        assert [u["id"] for u in r.json()] == [mine]
        r = await client.get(f"{INTERNAL}/tenants/t1/users", params={"created_after": "soon"})
        assert_error(r, 400, "created_after")


class TestDeleteTenantUser:
    async def test_removes_user_and_tokens(
        self, client: httpx.AsyncClient, db: AsyncDatabase[Document]
    ) -> None:
        user_id = await create_user(client)
        token = await login(client)
        r = await client.delete(f"{INTERNAL}/tenants//users/{user_id}")
        assert r.status_code == 204
        assert await db["users"].count_documents({}) == 0
        assert await db["tokens"].count_documents({}) == 0
        assert_error(await verify(client, token), 401)

    async def test_other_tenant_is_untouched(
        self, client: httpx.AsyncClient, db: AsyncDatabase[Document]
    ) -> None:
        user_id = await create_user(client, tenant="t1")
        assert (await client.delete(f"{INTERNAL}/tenants/t2/users/{user_id}")).status_code == 204
        assert await db["users"].count_documents({"_id": user_id}) == 1


class TestRevokeTokens:
    async def test_one_users_tokens(self, client: httpx.AsyncClient) -> None:
        first = await create_user(client)
        await create_user(client, "second@example.com")
        mine = [await login(client) for _ in range(2)]
        pat = await client.post(
            f"{INTERNAL.replace('internal', 'management')}/settings/tokens",
            json={"name": "ci"},
            headers=bearer(mine[0]),
        )
        theirs = await login(client, "second@example.com")

        r = await client.delete(f"{INTERNAL}/tokens", params={"tenant_id": "", "user_id": first})

        assert r.status_code == 204
        for token in (*mine, pat.text):
            assert_error(await verify(client, token), 401, "unauthorized")
        assert (await verify(client, theirs)).status_code == 200

    async def test_whole_tenant(
        self, client: httpx.AsyncClient, db: AsyncDatabase[Document]
    ) -> None:
        await create_user(client)
        await create_user(client, "second@example.com")
        tokens = [await login(client), await login(client, "second@example.com")]
        await db["tokens"].insert_one({"_id": "elsewhere", "sub": "x", "tenant_id": "t9", "iat": 0})

        r = await client.delete(f"{INTERNAL}/tokens", params={"tenant_id": ""})

        assert r.status_code == 204
        for token in tokens:
            assert_error(await verify(client, token), 401)
        assert await db["tokens"].count_documents({}) == 1

    async def test_tenant_id_required(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.delete(f"{INTERNAL}/tokens"), 400, "tenant_id")
        assert_error(
            await client.delete(f"{INTERNAL}/tokens", params={"user_id": "u"}), 400, "tenant_id"
        )
