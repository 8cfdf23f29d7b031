"""The MongoDB implementation of useradm's store."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection, atomically
from common.core.outbox import Effect, Outbox
from services.useradm.models import StoredSettings, StoredToken, User, UserChange, UserFilter
from services.useradm.store import (
    DataStore,
    DuplicateEmail,
    DuplicateTokenName,
    DuplicateUserId,
    SettingsConflict,
)
from services.useradm.store.indexes import SETTINGS, TENANTS, TOKENS, USER_SETTINGS, USERS

__all__ = ["MongoStore"]

_T = TypeVar("_T")
_NOT_NAMED: Final = {"name": {"$exists": False}}
_NAMED: Final = {"name": {"$exists": True}}


def _user_doc(user: User) -> Document:
    doc: Document = {
        "_id": user.id,
        "email": user.email,
        "password": user.password_hash,
        "created_ts": user.created_ts,
        "updated_ts": user.updated_ts,
    }
    if user.login_ts is not None:
        doc["login_ts"] = user.login_ts
    return doc


def _user(doc: Mapping[str, Any]) -> User:
    return User(
        id=doc["_id"],
        email=doc["email"],
        password_hash=doc.get("password", ""),
        created_ts=doc["created_ts"],
        updated_ts=doc.get("updated_ts", doc["created_ts"]),
        login_ts=doc.get("login_ts"),
    )


def _token_doc(token: StoredToken) -> Document:
    doc: Document = {"_id": token.id, "sub": token.subject, "iat": token.issued_at}
    if token.expires_at is not None:
        doc["exp"] = token.expires_at
    if token.name is not None:
        doc["name"] = token.name
    if token.last_used is not None:
        doc["last_used"] = token.last_used
    return doc


def _token(doc: Mapping[str, Any]) -> StoredToken:
    return StoredToken(
        id=doc["_id"],
        subject=doc["sub"],
        issued_at=doc["iat"],
        expires_at=doc.get("exp"),
        name=doc.get("name"),
        last_used=doc.get("last_used"),
    )


def _range(after: datetime | None, before: datetime | None) -> Document | None:
    bounds: Document = {}
    if after is not None:
        bounds["$gt"] = after
    if before is not None:
        bounds["$lt"] = before
    return bounds or None


def _user_query(filter_: UserFilter) -> Document:
    query: Document = {}
    if filter_.ids is not None:
        query["_id"] = {"$in": list(filter_.ids)}
    if filter_.emails is not None:
        query["email"] = {"$in": list(filter_.emails)}
    created = _range(filter_.created_after, filter_.created_before)
    if created is not None:
        query["created_ts"] = created
    updated = _range(filter_.updated_after, filter_.updated_before)
    if updated is not None:
        query["updated_ts"] = updated
    return query


def _duplicate_field(exc: DuplicateKeyError) -> str:
    details = exc.details or {}
    pattern = details.get("keyPattern") or details.get("keyValue") or {}
    if pattern:
        return str(next(iter(pattern)))
    # Servers that do not name the key say it in the message.
    return "email" if "email" in str(exc) else "_id"


class MongoStore(DataStore):
    """Stores users, tokens and settings; every query is scoped to one tenant."""

    def __init__(
        self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document], *, outbox: Outbox
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox

    def _coll(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    async def _with_effects(
        self,
        work: Callable[[AsyncClientSession | None], Awaitable[_T]],
        effects: Sequence[Effect],
        *,
        atomic: bool = False,
    ) -> _T:
        """Run `work`, and record `effects` in the same transaction unless it returned False
        (nothing changed). Without effects, a transaction only when `atomic`."""
        if not effects and not atomic:
            return await work(None)

        async def both(session: AsyncClientSession | None) -> _T:
            result = await work(session)
            if result is not False:
                await self._outbox.add(effects, session=session)
            return result

        return await atomically(self._client, both)

    # -- users -----------------------------------------------------------------------------

    async def insert_user(
        self, tenant_id: str, user: User, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Store a new user with `effects`; DuplicateEmail or DuplicateUserId when taken."""

        async def work(session: AsyncClientSession | None) -> None:
            await self._coll(USERS, tenant_id).insert_one(_user_doc(user), session=session)

        try:
            await self._with_effects(work, effects)
        except DuplicateKeyError as exc:
            if _duplicate_field(exc) == "email":
                raise DuplicateEmail(user.email) from exc
            raise DuplicateUserId(user.id) from exc

    async def get_user(self, tenant_id: str, user_id: str) -> User | None:
        """Return one user, or None."""
        doc = await self._coll(USERS, tenant_id).find_one({"_id": user_id})
        return _user(doc) if doc else None

    async def get_user_by_email(self, tenant_id: str, email: str) -> User | None:
        """Return the user with a (lower-cased) email, or None."""
        doc = await self._coll(USERS, tenant_id).find_one({"email": email})
        return _user(doc) if doc else None

    async def user_exists(self, tenant_id: str, user_id: str) -> bool:
        """Whether the user exists (an index-only check for token verification)."""
        doc = await self._coll(USERS, tenant_id).find_one({"_id": user_id}, {"_id": 1})
        return doc is not None

    async def list_users(self, tenant_id: str, filter_: UserFilter) -> list[User]:
        """Return the matching users, oldest first."""
        cursor = (
            self._coll(USERS, tenant_id)
            .find(_user_query(filter_))
            .sort([("created_ts", ASCENDING), ("_id", ASCENDING)])
        )
        return [_user(doc) async for doc in cursor]

    async def update_user(
        self,
        tenant_id: str,
        user_id: str,
        change: UserChange,
        *,
        revoke_tokens: bool = False,
        keep_token: str | None = None,
        effects: Sequence[Effect] = (),
    ) -> bool:
        """Apply a change (False: no such user); DuplicateEmail when the email is taken.

        With `revoke_tokens`, the user's tokens except `keep_token` are deleted in the same
        transaction, as are `effects` recorded.
        """
        fields: Document = {"updated_ts": change.updated_ts}
        if change.email is not None:
            fields["email"] = change.email
        if change.password_hash is not None:
            fields["password"] = change.password_hash

        async def work(session: AsyncClientSession | None) -> bool:
            try:
                result = await self._coll(USERS, tenant_id).update_one(
                    {"_id": user_id}, {"$set": fields}, session=session
                )
            except DuplicateKeyError as exc:
                raise DuplicateEmail(change.email or "") from exc
            if result.matched_count == 0:
                return False
            if revoke_tokens:
                query: Document = {"sub": user_id}
                if keep_token is not None:
                    query["_id"] = {"$ne": keep_token}
                await self._coll(TOKENS, tenant_id).delete_many(query, session=session)
            return True

        return await self._with_effects(work, effects, atomic=revoke_tokens)

    async def set_login_ts(self, tenant_id: str, user_id: str, when: datetime) -> None:
        """Record a successful login."""
        await self._coll(USERS, tenant_id).update_one(
            {"_id": user_id}, {"$set": {"login_ts": when}}
        )

    async def delete_user(
        self, tenant_id: str, user_id: str, *, effects: Sequence[Effect] = ()
    ) -> bool:
        """Delete a user with their tokens and settings, with `effects`; False (and no
        effects) when there was no such user."""

        async def work(session: AsyncClientSession | None) -> bool:
            result = await self._coll(USERS, tenant_id).delete_one(
                {"_id": user_id}, session=session
            )
            await self._coll(TOKENS, tenant_id).delete_many({"sub": user_id}, session=session)
            await self._coll(USER_SETTINGS, tenant_id).delete_many(
                {"user_id": user_id}, session=session
            )
            return result.deleted_count > 0

        return await self._with_effects(work, effects, atomic=True)

    async def add_tenant(self, tenant_id: str, when: datetime) -> None:
        """Record a tenant (idempotent)."""
        await self._coll(TENANTS, tenant_id).update_one(
            {"_id": tenant_id}, {"$setOnInsert": {"created_ts": when}}, upsert=True
        )

    # -- tokens ----------------------------------------------------------------------------

    async def insert_token(
        self, tenant_id: str, token: StoredToken, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Store an issued token with `effects`; DuplicateTokenName for a taken personal
        token name."""

        async def work(session: AsyncClientSession | None) -> None:
            await self._coll(TOKENS, tenant_id).insert_one(_token_doc(token), session=session)

        try:
            await self._with_effects(work, effects)
        except DuplicateKeyError as exc:
            raise DuplicateTokenName(token.name or "") from exc

    async def trim_sessions(self, tenant_id: str, user_id: str, *, keep: int, current: str) -> int:
        """Delete a user's login tokens beyond the `keep` newest (never `current`); count them."""
        tokens = self._coll(TOKENS, tenant_id)
        cursor = (
            tokens.find({"sub": user_id, "_id": {"$ne": current}, **_NOT_NAMED}, {"_id": 1})
            .sort([("iat", DESCENDING), ("_id", DESCENDING)])
            .skip(max(0, keep - 1))
        )
        stale = [doc["_id"] async for doc in cursor]
        if not stale:
            return 0
        result = await tokens.delete_many({"sub": user_id, "_id": {"$in": stale}})
        return result.deleted_count

    async def get_token(self, tenant_id: str, token_id: str) -> StoredToken | None:
        """Return one token record, or None (revoked, logged out or expired)."""
        doc = await self._coll(TOKENS, tenant_id).find_one({"_id": token_id})
        return _token(doc) if doc else None

    async def touch_token(self, tenant_id: str, token_id: str, when: datetime) -> None:
        """Record the use of a personal access token."""
        await self._coll(TOKENS, tenant_id).update_one(
            {"_id": token_id}, {"$set": {"last_used": when}}
        )

    async def delete_token(
        self, tenant_id: str, *, user_id: str, token_id: str, effects: Sequence[Effect] = ()
    ) -> bool:
        """Delete one of a user's tokens, with `effects`; False (and no effects) when it did
        not exist."""

        async def work(session: AsyncClientSession | None) -> bool:
            result = await self._coll(TOKENS, tenant_id).delete_one(
                {"_id": token_id, "sub": user_id}, session=session
            )
            return result.deleted_count > 0

        return await self._with_effects(work, effects)

    async def delete_tokens(self, tenant_id: str, *, user_id: str | None = None) -> int:
        """Delete the tokens of a user, or of the whole tenant; return how many went."""
        query: Document = {} if user_id is None else {"sub": user_id}
        result = await self._coll(TOKENS, tenant_id).delete_many(query)
        return result.deleted_count

    async def count_personal_tokens(self, tenant_id: str, user_id: str) -> int:
        """Count a user's personal access tokens."""
        return await self._coll(TOKENS, tenant_id).count_documents({"sub": user_id, **_NAMED})

    async def list_personal_tokens(self, tenant_id: str, user_id: str) -> list[StoredToken]:
        """Return a user's personal access tokens, oldest first."""
        cursor = (
            self._coll(TOKENS, tenant_id)
            .find({"sub": user_id, **_NAMED})
            .sort([("iat", ASCENDING), ("_id", ASCENDING)])
        )
        return [_token(doc) async for doc in cursor]

    # -- settings --------------------------------------------------------------------------

    def _settings(self, tenant_id: str, user_id: str | None) -> tuple[TenantCollection, Document]:
        if user_id is None:
            return self._coll(SETTINGS, tenant_id), {}
        return self._coll(USER_SETTINGS, tenant_id), {"user_id": user_id}

    async def get_settings(self, tenant_id: str, *, user_id: str | None) -> StoredSettings | None:
        """Return the tenant's settings (or one user's, with `user_id`), or None."""
        coll, query = self._settings(tenant_id, user_id)
        doc = await coll.find_one(query)
        if doc is None:
            return None
        return StoredSettings(values=json.loads(doc["values"]), etag=doc["etag"])

    async def save_settings(
        self,
        tenant_id: str,
        values: dict[str, Any],
        *,
        etag: str,
        user_id: str | None,
        if_match: str | None,
    ) -> None:
        """Replace the settings with a new ETag; SettingsConflict when `if_match` fails."""
        coll, query = self._settings(tenant_id, user_id)
        # Stored as JSON text: setting names are the UI's own and may hold `.` or `$`, which
        # a document's field names cannot carry everywhere.
        doc: Document = {**query, "etag": etag, "values": json.dumps(values)}
        condition = dict(query)
        if if_match is not None:
            condition["etag"] = if_match
        # NOTE: as in Mender, `If-Match` is checked against stored settings only: with none
        # stored yet the upsert creates them. A stale ETag makes the upsert collide with the
        # stored document's unique key, which is the mismatch.
        for attempt in (1, 2):
            try:
                await coll.replace_one(condition, doc, upsert=True)
                return
            except DuplicateKeyError as exc:
                if if_match is not None:
                    raise SettingsConflict(if_match) from exc
                if attempt == 2:
                    raise
                # Two first writes raced; the second one now replaces the first.
