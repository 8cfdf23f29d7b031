"""The revocation feed: every change that invalidates tokens, for the gateway to follow.

The gateway checks tokens itself (signature and expiry with the issuers' public keys); what
it cannot see in a token is whether the issuer has since revoked it. So each issuer
(deviceauth, useradm) writes a `Revocation` into its own `revocations` collection in the
same transaction as the change that invalidates tokens (a token deleted, a device rejected
or decommissioned, a user logged out or removed, ...). A revocation names a key, `jti:<id>`
(the tokens with that id) or `tenant:<id>` (every token of a tenant), and a second: tokens
under that key issued (`iat`) before `not_before` are refused. Tokens issued later are not,
so a device that authenticates again after its token was revoked gets a token that works;
an issuer dates a new token no earlier than the revocations of its keys (`issue_time`), at
most a second ahead of its clock, so a revocation and a new token within the same second
stay distinct.

Each write takes the next numbers of a per-database sequence (a counter document bumped in
the transaction, so sequence order is commit order) and upserts one document per key, so
the collection holds the current state: a gateway that starts reads it whole, one that
missed something reads what changed after the last sequence number it saw. A document
expires (TTL index) when the last token it refuses would have expired anyway.

`RevocationFeed` serves the feed: a background loop notices new entries (woken by the
process's own writes, polling for other replicas') and hands them to waiting long-polls
and to a publisher (NATS, when configured), so every gateway hears of a change at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import nats
from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from common.core.background import in_background
from common.core.mongo import Document, TenantCollection

__all__ = [
    "NEVER",
    "REVOCATIONS_HEADER",
    "REVOCATION_INDEXES",
    "SUBJECT_PREFIX",
    "FeedEntry",
    "Revocation",
    "RevocationFeed",
    "recorded_sequence",
    "reset_recorded_sequence",
    "restore_recorded_sequence",
    "revocation_feed",
    "revoke_after",
    "subject",
    "tenant_key",
    "token_key",
]

_log = logging.getLogger("common.core.revocations")
_REVOCATIONS: Final = "revocations"
_COUNTER: Final = "revocation_sequence"
# Expiry of what refuses tokens that never expire.
NEVER: Final = datetime(9999, 12, 31, tzinfo=UTC)
# On the issuer's answer to a change that revoked tokens: the sequence number that reflects
# it, so the gateway that relays the answer applies the change first.
REVOCATIONS_HEADER: Final = "X-Fleetport-Revocations"
SUBJECT_PREFIX: Final = "fleetport.revocations."

REVOCATION_INDEXES: Final = {
    _REVOCATIONS: [
        IndexModel([("seq", ASCENDING)]),
        IndexModel([("expires", ASCENDING)], expireAfterSeconds=0),
    ]
}

# The last sequence number this request's changes took (read by the app's middleware).
_recorded: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "revocations_recorded", default=None
)


def token_key(token_id: str) -> str:
    """The key of the tokens with this `jti`."""
    return f"jti:{token_id}"


def tenant_key(tenant_id: str) -> str:
    """The key of every token of a tenant (the empty tenant: a single-tenant install)."""
    return f"tenant:{tenant_id}"


def revoke_after(now: datetime) -> int:
    """The `not_before` of a revocation made at `now`: every token issued so far is refused."""
    return math.floor(now.timestamp()) + 1


def recorded_sequence() -> int | None:
    """The sequence number of the last revocation the current request recorded, if any."""
    return _recorded.get()


def reset_recorded_sequence() -> contextvars.Token[int | None]:
    """Start a request with nothing recorded."""
    return _recorded.set(None)


def restore_recorded_sequence(token: contextvars.Token[int | None]) -> None:
    """End a request started with `reset_recorded_sequence`."""
    _recorded.reset(token)


@dataclass(frozen=True, slots=True)
class Revocation:
    """Refuse the tokens under `key` issued before `not_before` (epoch seconds).

    `expires` is when the last of them expires anyway (`NEVER` for tokens without `exp`).
    """

    key: str
    not_before: int
    expires: datetime


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """A revocation as the feed serves it: its sequence number, expiry in epoch seconds."""

    seq: int
    key: str
    not_before: int
    expires: int

    def wire(self) -> dict[str, Any]:
        """The JSON form of the feed endpoint and of the published messages."""
        return {
            "seq": self.seq,
            "key": self.key,
            "not_before": self.not_before,
            "expires": self.expires,
        }


def _entry(doc: Document) -> FeedEntry:
    expires: datetime = doc["expires"]
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return FeedEntry(doc["seq"], doc["_id"], doc["not_before"], int(expires.timestamp()))


def subject(issuer: str) -> str:
    """The NATS subject an issuer publishes its revocations on."""
    return f"{SUBJECT_PREFIX}{issuer}"


Publish = Callable[[Sequence[FeedEntry]], Awaitable[None]]


class RevocationFeed:
    """An issuer's revocations: recorded with changes, served to the gateways."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        publish: Publish | None = None,
        poll_interval: float = 0.25,
        page_size: int = 1000,
    ) -> None:
        self._coll = db[_REVOCATIONS]
        self._counter = db[_COUNTER]
        self._publish = publish
        self._poll_interval = poll_interval
        self.page_size = page_size
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._last = 0

    async def record(
        self, revocations: Sequence[Revocation], *, session: AsyncClientSession | None
    ) -> None:
        """Write revocations (in the caller's transaction): one sequence number each."""
        if not revocations:
            return
        counter = await self._counter.find_one_and_update(
            {"_id": _REVOCATIONS},
            {"$inc": {"value": len(revocations)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert counter is not None
        last: int = counter["value"]
        first = last - len(revocations) + 1
        await self._coll.bulk_write(
            [
                UpdateOne(
                    {"_id": r.key},
                    {
                        "$set": {"seq": first + i},
                        "$max": {"not_before": r.not_before, "expires": r.expires},
                    },
                    upsert=True,
                )
                for i, r in enumerate(revocations)
            ],
            ordered=True,
            session=session,
        )
        _recorded.set(last)

    async def revoke(
        self,
        tokens: TenantCollection,
        query: Document,
        *,
        now: datetime,
        expiry: Callable[[Document], datetime | None],
        session: AsyncClientSession,
    ) -> int:
        """Delete the token documents `query` selects and record their revocation.

        `expiry` reads a document's expiry (None: never). An empty query means every token
        of the tenant: one revocation of the tenant's key then, kept for good.
        """
        not_before = revoke_after(now)
        if not query:
            result = await tokens.delete_many({}, session=session)
            if result.deleted_count:
                revocation = Revocation(tenant_key(tokens.tenant_id), not_before, NEVER)
                await self.record([revocation], session=session)
            return result.deleted_count
        found = [doc async for doc in tokens.find(query, session=session)]
        if not found:
            return 0
        result = await tokens.delete_many(
            {"_id": {"$in": [doc["_id"] for doc in found]}}, session=session
        )
        await self.record(
            [Revocation(token_key(doc["_id"]), not_before, expiry(doc) or NEVER) for doc in found],
            session=session,
        )
        return result.deleted_count

    async def issue_time(
        self, now: datetime, keys: Sequence[str], *, session: AsyncClientSession | None
    ) -> int:
        """The `iat` of a token issued now under `keys`: never before their revocations."""
        issued = math.floor(now.timestamp())
        async for doc in self._coll.find(
            {"_id": {"$in": list(keys)}}, {"not_before": 1}, session=session
        ):
            issued = max(issued, int(doc["not_before"]))
        return issued

    async def read(self, after: int, *, wait: float = 0) -> list[FeedEntry]:
        """Live revocations with a sequence number above `after`, in order (a page).

        With `wait`, an empty answer is held back until something is recorded or `wait`
        seconds pass (a long poll).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            changed = self._changed
            entries = await self._page(after)
            remaining = deadline - loop.time()
            if entries or remaining <= 0:
                return entries
            await _wait(changed, remaining)

    async def _page(self, after: int) -> list[FeedEntry]:
        # The TTL monitor removes expired entries only now and then: skip them here.
        query = {"seq": {"$gt": after}, "expires": {"$gt": datetime.now(UTC)}}
        cursor = self._coll.find(query).sort("seq", ASCENDING).limit(self.page_size)
        return [_entry(doc) async for doc in cursor]

    def wake(self) -> None:
        """Something was recorded: look for it now rather than at the next poll."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RevocationFeed]:
        """Follow the collection in the background while the service runs."""
        self._last = await self._latest()
        async with in_background(self._follow(), name="revocation-feed"):
            yield self

    async def _latest(self) -> int:
        doc = await self._counter.find_one({"_id": _REVOCATIONS})
        return int(doc["value"]) if doc else 0

    async def _follow(self) -> None:
        while True:
            await _wait(self._wake, self._poll_interval)
            self._wake.clear()
            try:
                entries = await self._page(self._last)
            except Exception:  # the database is down: the next round tries again
                _log.warning("cannot read the revocation feed", exc_info=True)
                continue
            if not entries:
                continue
            self._last = entries[-1].seq
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            if len(entries) == self.page_size:
                self._wake.set()
            if self._publish is not None:
                try:
                    await self._publish(entries)
                except Exception:  # the feed endpoint still has them
                    _log.warning("cannot publish revocations", exc_info=True)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    # Not `wait_for`: on Python 3.11 it can swallow a cancellation that arrives just as the
    # event is set, and a loop around it would then never stop.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


@contextlib.asynccontextmanager
async def revocation_feed(
    db: AsyncDatabase[Document], *, issuer: str, nats_uri: str | None
) -> AsyncIterator[RevocationFeed]:
    """An issuer's running feed; with `nats_uri`, also published on `subject(issuer)`."""
    if nats_uri is None:
        async with RevocationFeed(db).running() as feed:
            yield feed
        return
    nc = await nats.connect(nats_uri, name=f"{issuer}-revocations", max_reconnect_attempts=-1)

    async def publish(entries: Sequence[FeedEntry]) -> None:
        payload = json.dumps({"entries": [e.wire() for e in entries]}).encode()
        await nc.publish(subject(issuer), payload)

    try:
        async with RevocationFeed(db, publish=publish).running() as feed:
            yield feed
    finally:
        await nc.drain()
