"""Management API: the users of a tenant (v1) and one's own password (v2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document
from tests.toolkit import assert_error
from tests.useradm.conftest import (
    EMAIL,
    LOGIN,
    MGMT_V2,
    PASSWORD,
    USERS,
    bearer,
    claims_of,
    create_user,
    login,
    verify,
)

OTHER = "second@example.com"
OTHER_PASSWORD = "another-secret-1"
# Mender's answer to an email another user has (422).
DUPLICATE_EMAIL = "user with a given email already exists"


async def _add(client: httpx.AsyncClient, token: str, email: str, password: str) -> str:
    r = await client.post(USERS, json={"email": email, "password": password}, headers=bearer(token))
    assert r.status_code == 201, r.text
    location = r.headers["Location"]
    assert location.startswith("users/")
    return location.removeprefix("users/")


class TestCreateUser:
    async def test_created_with_location(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        r = await client.post(
            USERS,
            json={"email": "New.User@Example.com", "password": OTHER_PASSWORD},
            headers=bearer(token),
        )
        assert r.status_code == 201, r.text
        assert r.content == b""
        user_id = r.headers["Location"].removeprefix("users/")
        stored = await db["users"].find_one({"_id": user_id})
        assert stored is not None
        assert stored["email"] == "new.user@example.com"
        assert stored["tenant_id"] == ""
        assert stored["password"] != OTHER_PASSWORD
        assert bcrypt.checkpw(OTHER_PASSWORD.encode(), stored["password"].encode())
        assert stored["created_ts"] == stored["updated_ts"]
        assert "login_ts" not in stored
        # The new user can log in.
        assert claims_of(await login(client, "new.user@example.com", OTHER_PASSWORD))["sub"] == (
            user_id
        )

    async def test_duplicate_email_any_case(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        r = await client.post(
            USERS, json={"email": EMAIL.upper(), "password": OTHER_PASSWORD}, headers=bearer(token)
        )
        assert_error(r, 422, DUPLICATE_EMAIL)
        assert await db["users"].count_documents({}) == 1

    async def test_email_taken_in_another_tenant(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        await create_user(client, OTHER, tenant="tenant-b")
        r = await client.post(
            USERS, json={"email": OTHER, "password": OTHER_PASSWORD}, headers=bearer(token)
        )
        assert_error(r, 422, DUPLICATE_EMAIL)
        assert await db["users"].distinct("tenant_id", {"email": OTHER}) == ["tenant-b"]

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({"email": "a@example.com", "password": "short"}, "minimum 8 characters"),
            ({"email": "a@example.com", "password": ""}, "password: cannot be blank"),
            ({"email": "a@example.com", "password": "x" * 73}, "at most 72 bytes"),
            ({"email": "not-an-email", "password": OTHER_PASSWORD}, "valid email"),
            ({"email": "", "password": OTHER_PASSWORD}, "email: cannot be blank"),
            ({"email": "jürgen@example.com", "password": OTHER_PASSWORD}, "ASCII"),
            ({"email": "a@" + "b" * 5000 + ".com", "password": OTHER_PASSWORD}, "length"),
            ({"email": "a@example.com"}, "password"),
            ({"password": OTHER_PASSWORD}, "email"),
            ({"email": 5, "password": OTHER_PASSWORD}, "email"),
            ({"email": "a@example.com", "password": 12345678}, "password"),
            ({"email": "a@example.com", "password": OTHER_PASSWORD, "admin": True}, "admin"),
        ],
    )
    async def test_invalid_body(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        db: AsyncDatabase[Document],
        body: dict[str, Any],
        fragment: str,
    ) -> None:
        _, token = admin
        assert_error(await client.post(USERS, json=body, headers=bearer(token)), 400, fragment)
        assert await db["users"].count_documents({}) == 1

    async def test_password_within_email(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        r = await client.post(
            USERS,
            json={"email": "longusername@example.com", "password": "LongUserName"},
            headers=bearer(token),
        )
        assert_error(r, 422, "too similar")

    async def test_malformed_json(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        r = await client.post(
            USERS,
            content=b'{"email": "a@example.com",',
            headers={**bearer(token), "Content-Type": "application/json"},
        )
        assert_error(r, 400, "failed to decode request body")

    async def test_not_json(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        r = await client.post(
            USERS,
            content=b"email=a@example.com",
            headers={**bearer(token), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_error(r, 415)

    async def test_oversized_body(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        body = {"email": "a@example.com", "password": "x" * (2 * 1024 * 1024)}
        assert_error(await client.post(USERS, json=body, headers=bearer(token)), 413)

    async def test_without_token(self, client: httpx.AsyncClient) -> None:
        r = await client.post(USERS, json={"email": OTHER, "password": OTHER_PASSWORD})
        assert_error(r, 401)

    async def test_users_go_to_the_callers_tenant(
        self, client: httpx.AsyncClient, db: AsyncDatabase[Document], signing_key: Any
    ) -> None:
        # A caller of tenant-b (as the gateway forwards it) creates users in tenant-b.
        token = signing_key.sign(
            {"sub": "u-b", "jti": "j", "mender.user": True, "mender.tenant": "tenant-b"}
        )
        user_id = await _add(client, token, OTHER, OTHER_PASSWORD)
        stored = await db["users"].find_one({"_id": user_id})
        assert stored is not None
        assert stored["tenant_id"] == "tenant-b"


class TestListUsers:
    async def test_lists_the_tenants_users(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        admin_id, token = admin
        other_id = await _add(client, token, OTHER, OTHER_PASSWORD)
        await create_user(client, "stranger@example.com", tenant="tenant-b")

        r = await client.get(USERS, headers=bearer(token))

        assert r.status_code == 200
        users = r.json()
        assert [u["id"] for u in users] == [admin_id, other_id]
        assert users[0]["email"] == EMAIL
        assert set(users[0]) == {"id", "email", "created_ts", "updated_ts", "login_ts", "roles"}
        assert set(users[1]) == {"id", "email", "created_ts", "updated_ts", "roles"}
        created = datetime.fromisoformat(users[1]["created_ts"])
        assert created.tzinfo is not None
        assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)

    async def test_filters(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        admin_id, token = admin
        other_id = await _add(client, token, OTHER, OTHER_PASSWORD)
        third_id = await _add(client, token, "third@example.com", OTHER_PASSWORD)

        async def ids(params: Any) -> list[str]:
            r = await client.get(USERS, params=params, headers=bearer(token))
            assert r.status_code == 200, r.text
            return [u["id"] for u in r.json()]

        assert await ids({"id": [admin_id, third_id]}) == [admin_id, third_id]
        assert await ids({"email": [OTHER.upper()]}) == [other_id]
        assert await ids({"email": "nobody@example.com"}) == []
        now = int(datetime.now(UTC).timestamp())
        assert await ids({"created_after": now - 3600}) == [admin_id, other_id, third_id]
        assert await ids({"created_before": now - 3600}) == []
        assert await ids({"updated_after": now + 3600}) == []
        assert await ids({"updated_before": now + 3600, "id": other_id}) == [other_id]

    @pytest.mark.parametrize(
        "params",
        [
            {"created_after": "yesterday"},
            {"created_before": "1.5"},
            {"updated_after": "9" * 30},
            {"updated_before": "-" + "9" * 30},
        ],
    )
    async def test_bad_timestamp(
        self, client: httpx.AsyncClient, admin: tuple[str, str], params: dict[str, str]
    ) -> None:
        _, token = admin
        r = await client.get(USERS, params=params, headers=bearer(token))
        assert_error(r, 400, next(iter(params)))

    async def test_device_token_refused(self, client: httpx.AsyncClient, signing_key: Any) -> None:
        token = signing_key.sign({"sub": "dev", "jti": "j", "mender.device": True})
        assert_error(await client.get(USERS, headers=bearer(token)), 401)


class TestGetUser:
    async def test_by_id_and_me(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        admin_id, token = admin
        other_id = await _add(client, token, OTHER, OTHER_PASSWORD)

        r = await client.get(f"{USERS}/{other_id}", headers=bearer(token))
        assert r.status_code == 200
        assert r.json()["email"] == OTHER
        assert r.json()["id"] == other_id
        assert "password" not in r.json()

        r = await client.get(f"{USERS}/me", headers=bearer(token))
        assert r.status_code == 200
        assert r.json()["id"] == admin_id
        assert "login_ts" in r.json()

    async def test_not_found(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        assert_error(await client.get(f"{USERS}/no-such-user", headers=bearer(token)), 404)

    async def test_user_of_another_tenant(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        stranger = await create_user(client, "stranger@example.com", tenant="tenant-b")
        assert_error(await client.get(f"{USERS}/{stranger}", headers=bearer(token)), 404)


class TestUpdateUser:
    async def test_change_own_password(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        admin_id, token = admin
        other_session = await login(client)
        before = await db["users"].find_one({"_id": admin_id})
        assert before is not None

        r = await client.put(
            f"{USERS}/me",
            json={"password": "brand-new-secret", "current_password": PASSWORD},
            headers=bearer(token),
        )

        assert r.status_code == 204, r.text
        after = await db["users"].find_one({"_id": admin_id})
        assert after is not None
        assert after["updated_ts"] > before["updated_ts"]
        assert (await client.post(LOGIN, auth=(EMAIL, PASSWORD))).status_code == 401
        assert (await client.post(LOGIN, auth=(EMAIL, "brand-new-secret"))).status_code == 200
        # Other sessions end; the token that made the change goes on.
        assert (await verify(client, other_session)).status_code == 401
        assert (await verify(client, token)).status_code == 200

    async def test_own_password_needs_the_current_one(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        admin_id, token = admin
        for body in (
            {"password": "brand-new-secret"},
            {"password": "brand-new-secret", "current_password": "wrong-password"},
        ):
            r = await client.put(f"{USERS}/{admin_id}", json=body, headers=bearer(token))
            assert_error(r, 422, "current password mismatch")
        assert (await client.post(LOGIN, auth=(EMAIL, PASSWORD))).status_code == 200

    async def test_own_email_needs_the_current_password(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        r = await client.put(f"{USERS}/me", json={"email": OTHER}, headers=bearer(token))
        assert_error(r, 422, "current password mismatch")
        r = await client.put(
            f"{USERS}/me",
            json={"email": OTHER.upper(), "current_password": PASSWORD},
            headers=bearer(token),
        )
        assert r.status_code == 204
        assert (await client.get(f"{USERS}/me", headers=bearer(token))).json()["email"] == OTHER

    async def test_email_of_another_user(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        other_id = await _add(client, token, OTHER, OTHER_PASSWORD)
        their_session = await login(client, OTHER, OTHER_PASSWORD)
        r = await client.put(
            f"{USERS}/{other_id}", json={"email": "renamed@example.com"}, headers=bearer(token)
        )
        assert r.status_code == 204, r.text
        assert (
            await client.post(LOGIN, auth=("renamed@example.com", OTHER_PASSWORD))
        ).status_code == 200
        # A new login name ends the user's sessions.
        assert_error(await verify(client, their_session), 401, "unauthorized")
        assert_error(await client.post(LOGIN, auth=(OTHER, OTHER_PASSWORD)), 401, "unauthorized")

    async def test_password_of_another_user(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        other_id = await _add(client, token, OTHER, OTHER_PASSWORD)
        r = await client.put(
            f"{USERS}/{other_id}",
            json={"password": "brand-new-secret", "current_password": PASSWORD},
            headers=bearer(token),
        )
        assert_error(r, 422, "password cannot be modified")

    async def test_duplicate_email(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        other_id = await _add(client, token, OTHER, OTHER_PASSWORD)
        r = await client.put(f"{USERS}/{other_id}", json={"email": EMAIL}, headers=bearer(token))
        assert_error(r, 422, DUPLICATE_EMAIL)
        unchanged = await client.get(f"{USERS}/{other_id}", headers=bearer(token))
        assert unchanged.json()["email"] == OTHER
        assert (await client.post(LOGIN, auth=(OTHER, OTHER_PASSWORD))).status_code == 200

    async def test_not_found(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        r = await client.put(
            f"{USERS}/no-such-user", json={"email": "x@example.com"}, headers=bearer(token)
        )
        assert_error(r, 404, "user not found")

    @pytest.mark.parametrize(
        ("body", "status", "fragment"),
        [
            ({}, 400, "no update information"),
            ({"email": "", "password": ""}, 400, "no update information"),
            ({"password": "short", "current_password": PASSWORD}, 400, "minimum 8"),
            ({"email": "bad"}, 400, "valid email"),
            ({"email": ["a@example.com"]}, 400, "email"),
            ({"email": "a@example.com", "roles": ["admin"]}, 400, "roles"),
            ({"password": "admin@exa", "current_password": PASSWORD}, 422, "too similar"),
        ],
    )
    async def test_invalid(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        body: dict[str, Any],
        status: int,
        fragment: str,
    ) -> None:
        _, token = admin
        r = await client.put(f"{USERS}/me", json=body, headers=bearer(token))
        assert_error(r, status, fragment)

    async def test_body_not_an_object(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        assert_error(await client.put(f"{USERS}/me", json="x", headers=bearer(token)), 400)


class TestUpdateOwnPasswordV2:
    async def test_change(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        r = await client.put(
            f"{MGMT_V2}/users/me",
            json={"password": "brand-new-secret", "current_password": PASSWORD},
            headers=bearer(token),
        )
        assert r.status_code == 204, r.text
        assert (await client.post(LOGIN, auth=(EMAIL, "brand-new-secret"))).status_code == 200
        assert_error(await client.post(LOGIN, auth=(EMAIL, PASSWORD)), 401, "unauthorized")

    @pytest.mark.parametrize(
        ("body", "status", "fragment"),
        [
            ({"password": "brand-new-secret"}, 422, "current password mismatch"),
            ({"password": "brand-new-secret", "current_password": "nope-nope"}, 422, "mismatch"),
            ({"current_password": PASSWORD}, 400, "no update information"),
            ({"email": OTHER, "current_password": PASSWORD}, 400, "email"),
            ({"password": 123456789, "current_password": PASSWORD}, 400, "password"),
        ],
    )
    async def test_invalid(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        body: dict[str, Any],
        status: int,
        fragment: str,
    ) -> None:
        _, token = admin
        r = await client.put(f"{MGMT_V2}/users/me", json=body, headers=bearer(token))
        assert_error(r, status, fragment)

    async def test_user_gone(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        admin_id, token = admin
        await db["users"].delete_one({"_id": admin_id})
        r = await client.put(
            f"{MGMT_V2}/users/me",
            json={"password": "brand-new-secret", "current_password": PASSWORD},
            headers=bearer(token),
        )
        assert_error(r, 404)


class TestDeleteUser:
    async def test_removes_user_tokens_and_settings(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        other_id = await _add(client, token, OTHER, OTHER_PASSWORD)
        their_token = await login(client, OTHER, OTHER_PASSWORD)
        r = await client.post(
            f"{USERS.rsplit('/', 1)[0]}/settings/me", json={"a": 1}, headers=bearer(their_token)
        )
        assert r.status_code == 201

        r = await client.delete(f"{USERS}/{other_id}", headers=bearer(token))

        assert r.status_code == 204
        assert await db["users"].find_one({"_id": other_id}) is None
        assert await db["tokens"].count_documents({"sub": other_id}) == 0
        assert await db["user_settings"].count_documents({"user_id": other_id}) == 0
        assert_error(await verify(client, their_token), 401)
        assert (await client.post(LOGIN, auth=(OTHER, OTHER_PASSWORD))).status_code == 401

    async def test_absent_user(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        admin_id, token = admin
        r = await client.delete(f"{USERS}/no-such-user", headers=bearer(token))
        assert r.status_code == 204
        assert r.content == b""
        listed = (await client.get(USERS, headers=bearer(token))).json()
        assert [u["id"] for u in listed] == [admin_id]

    async def test_user_of_another_tenant_is_untouched(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        stranger = await create_user(client, "stranger@example.com", tenant="tenant-b")
        assert (
            await client.delete(f"{USERS}/{stranger}", headers=bearer(token))
        ).status_code == 204
        assert await db["users"].find_one({"_id": stranger}) is not None

    async def test_delete_me(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        admin_id, token = admin
        assert (await client.delete(f"{USERS}/me", headers=bearer(token))).status_code == 204
        assert await db["users"].find_one({"_id": admin_id}) is None
        assert_error(await verify(client, token), 401)
