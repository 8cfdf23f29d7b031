"""MongoStore against the real Mongo-wire server: uniqueness, scoping, cascades, limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document, create_client, ensure_indexes
from common.core.outbox import Outbox
from services.useradm.models import StoredToken, User, UserChange, UserFilter
from services.useradm.store import (
    DuplicateEmail,
    DuplicateTokenName,
    DuplicateUserId,
    SettingsConflict,
)
from services.useradm.store.indexes import INDEXES
from services.useradm.store.mongo import MongoStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(mongo_url: str, db_name: str) -> AsyncIterator[MongoStore]:
    """A store over the test's fresh database, with its indexes."""
    client = create_client(mongo_url)
    try:
        db = client[db_name]
        await ensure_indexes(db, INDEXES)
        yield MongoStore(client, db, outbox=Outbox(db, ()))
    finally:
        await client.close()


def _user(user_id: str, email: str, at: datetime = T0) -> User:
    return User(id=user_id, email=email, password_hash="$2b$04$x", created_ts=at, updated_ts=at)


def _token(token_id: str, subject: str, at: datetime, name: str | None = None) -> StoredToken:
    return StoredToken(id=token_id, subject=subject, issued_at=at, name=name)


class TestUsers:
    async def test_email_unique_across_tenants(self, store: MongoStore) -> None:
        await store.insert_user("t1", _user("u1", "a@example.com"))
        with pytest.raises(DuplicateEmail):
            await store.insert_user("t2", _user("u2", "a@example.com"))
        with pytest.raises(DuplicateUserId):
            await store.insert_user("t1", _user("u1", "b@example.com"))

    async def test_reads_are_scoped(self, store: MongoStore) -> None:
        await store.insert_user("t1", _user("u1", "a@example.com"))
        assert (await store.get_user("t1", "u1")) == _user("u1", "a@example.com")
        assert await store.get_user("t2", "u1") is None
        assert await store.get_user_by_email("t2", "a@example.com") is None
        assert await store.user_exists("t1", "u1")
        assert not await store.user_exists("", "u1")

    async def test_list_filters(self, store: MongoStore) -> None:
        for i in range(3):
            await store.insert_user("", _user(f"u{i}", f"{i}@example.com", T0 + timedelta(days=i)))
        await store.insert_user("other", _user("x", "x@example.com", T0))

        async def ids(filter_: UserFilter) -> list[str]:
            return [u.id for u in await store.list_users("", filter_)]

        assert await ids(UserFilter()) == ["u0", "u1", "u2"]
        assert await ids(UserFilter(created_after=T0)) == ["u1", "u2"]
        two_days = T0 + timedelta(days=2)
        assert await ids(UserFilter(created_after=T0, created_before=two_days)) == ["u1"]
        assert await ids(UserFilter(updated_before=T0 + timedelta(hours=1))) == ["u0"]
        assert await ids(UserFilter(ids=("u2", "x"), emails=("2@example.com",))) == ["u2"]
        assert await ids(UserFilter(ids=())) == []

    async def test_update_revokes_tokens_atomically(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        await store.insert_user("", _user("u1", "a@example.com"))
        await store.insert_user("", _user("u2", "b@example.com"))
        for token_id in ("keep", "drop", "pat"):
            await store.insert_token(
                "", _token(token_id, "u1", T0, "n" if token_id == "pat" else None)
            )
        await store.insert_token("", _token("theirs", "u2", T0))
        change = UserChange(updated_ts=T0 + timedelta(days=1), password_hash="$2b$04$new")

        assert await store.update_user("", "u1", change, revoke_tokens=True, keep_token="keep")

        assert {d["_id"] async for d in db["tokens"].find({})} == {"keep", "theirs"}
        stored = await db["users"].find_one({"_id": "u1"})
        assert stored is not None
        assert stored["password"] == "$2b$04$new"
        assert stored["email"] == "a@example.com"
        assert not await store.update_user("", "nobody", change)
        with pytest.raises(DuplicateEmail):
            await store.update_user("", "u1", UserChange(updated_ts=T0, email="b@example.com"))

    async def test_delete_cascades(self, store: MongoStore, db: AsyncDatabase[Document]) -> None:
        await store.insert_user("", _user("u1", "a@example.com"))
        await store.insert_token("", _token("j1", "u1", T0))
        await store.save_settings("", {"a": 1}, etag="e", user_id="u1", if_match=None)
        await store.save_settings("", {"shared": 1}, etag="e", user_id=None, if_match=None)

        assert await store.delete_user("", "u1")
        assert not await store.delete_user("", "u1")

        assert await db["users"].count_documents({}) == 0
        assert await db["tokens"].count_documents({}) == 0
        assert await db["user_settings"].count_documents({}) == 0
        assert await db["settings"].count_documents({}) == 1


class TestTokens:
    async def test_trim_sessions_keeps_newest_and_current(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        for i in range(5):
            await store.insert_token("", _token(f"s{i}", "u1", T0 + timedelta(minutes=i)))
        await store.insert_token("", _token("pat", "u1", T0, name="ci"))
        await store.insert_token("", _token("other", "u2", T0))
        # The current token is the oldest here (clock skew): it is kept anyway.
        await store.insert_token("", _token("current", "u1", T0 - timedelta(days=1)))

        removed = await store.trim_sessions("", "u1", keep=3, current="current")

        assert removed == 3
        remaining = {d["_id"] async for d in db["tokens"].find({})}
        assert remaining == {"current", "s4", "s3", "pat", "other"}

    async def test_personal_token_names(self, store: MongoStore) -> None:
        await store.insert_token("", _token("p1", "u1", T0, name="ci"))
        with pytest.raises(DuplicateTokenName):
            await store.insert_token("", _token("p2", "u1", T0, name="ci"))
        await store.insert_token("", _token("p3", "u2", T0, name="ci"))
        await store.insert_token("t2", _token("p4", "u1", T0, name="ci"))
        # Unnamed login tokens never collide.
        await store.insert_token("", _token("s1", "u1", T0))
        await store.insert_token("", _token("s2", "u1", T0))
        assert await store.count_personal_tokens("", "u1") == 1
        assert [t.id for t in await store.list_personal_tokens("", "u1")] == ["p1"]

    async def test_revocation_is_scoped(self, store: MongoStore) -> None:
        await store.insert_token("", _token("a", "u1", T0))
        await store.insert_token("", _token("b", "u2", T0))
        await store.insert_token("t2", _token("c", "u1", T0))
        assert not await store.delete_token("", user_id="u2", token_id="a")
        assert await store.delete_tokens("", user_id="u1") == 1
        assert await store.delete_tokens("") == 1
        assert await store.get_token("t2", "c") is not None

    async def test_expiry_index(self, db: AsyncDatabase[Document], store: MongoStore) -> None:
        info = await db["tokens"].index_information()
        assert info["exp_ttl"]["expireAfterSeconds"] == 0
        assert info["tenant_sub_name"]["unique"] is True
        users = await db["users"].index_information()
        assert users["email_1"]["key"] == [("email", 1)]
        assert users["email_1"]["unique"] is True


class TestSettings:
    async def test_etag_condition(self, store: MongoStore, db: AsyncDatabase[Document]) -> None:
        await store.save_settings("", {"a.b": {"$x": 1}}, etag="e1", user_id=None, if_match=None)
        with pytest.raises(SettingsConflict):
            await store.save_settings("", {"a": 2}, etag="e2", user_id=None, if_match="stale")
        await store.save_settings("", {"a": 3}, etag="e3", user_id=None, if_match="e1")
        stored = await store.get_settings("", user_id=None)
        assert stored is not None
        assert stored.values == {"a": 3}
        assert stored.etag == "e3"
        raw = await db["settings"].find_one({})
        assert raw is not None
        assert json.loads(raw["values"]) == {"a": 3}
        assert await store.get_settings("t2", user_id=None) is None
        assert await store.get_settings("", user_id="u1") is None
