"""The outbox: cross-service effects stored with the change that causes them, then delivered.

A store writes `Effect`s into its own database in the same transaction as the change (so a
crash can never keep one without the other); `OutboxRelay` sends them to the peers'
internal APIs in order, per peer, retrying with backoff until the peer accepts. Delivery is
at-least-once: every request carries the effect's id as `Idempotency-Key`, the same on each
retry, so receivers can recognise a repeat.

A service may also deliver effects itself (webhooks, cloud APIs): it registers a `Sender`
for a peer name, and the effects of that peer are queued in lanes (e.g. one per target),
each lane delivered in order and independently of the others.

A peer with neither an address nor a sender is not deployed: effects for it are not written
(logged once per peer), and those written while it was deployed are deleted, with a log
line, when the relay starts. Otherwise they would pile up forever, for nobody.

The relay keeps the outbox's metrics (`common.core.metrics`): the deliveries by outcome as
they happen, and every few seconds the backlog and the age of the oldest effect per peer,
from indexed queries whose cost does not depend on how often they are scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from common.core.background import in_background
from common.core.metrics import OUTBOX_BACKLOG, OUTBOX_DELIVERIES, OUTBOX_OLDEST_AGE
from common.core.mongo import Document
from common.core.requestid import REQUEST_ID_HEADER, current_request_id

__all__ = [
    "IDEMPOTENCY_KEY_HEADER",
    "OUTBOX_INDEXES",
    "Attempt",
    "Effect",
    "Outbox",
    "OutboxRelay",
    "Outcome",
    "Sender",
    "outcome_of",
]

_log = logging.getLogger("common.core.outbox")
_COLLECTION: Final = "outbox"
_LEASE: Final = timedelta(seconds=30)
_RETRYABLE_4XX: Final = frozenset({404, 408, 425, 429})
_BATCH: Final = 100  # pending effects of a lane read per query
_MEASURE_EVERY: Final = 10.0  # seconds between two counts of the backlog
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"

# One index serves the lanes of a peer (peer, state) and each lane's queue in order.
OUTBOX_INDEXES: Final = {
    _COLLECTION: [
        IndexModel(
            [("peer", ASCENDING), ("state", ASCENDING), ("lane", ASCENDING), ("_id", ASCENDING)]
        )
    ]
}


@dataclass(frozen=True, slots=True)
class Effect:
    """One call to make on a peer's internal API (or one delivery a `Sender` makes).

    `lane` orders effects of a peer that has a `Sender`: each lane is delivered in order,
    independently of the others.
    """

    peer: str
    method: str
    path: str
    body: Any = None
    ok: Collection[int] = field(default=(200, 201, 202, 204))
    lane: str | None = None


class Outcome(enum.Enum):
    """How a delivery attempt ended, and so what becomes of the effect."""

    # Delivered (or nothing is left to deliver): the effect is removed.
    DONE = "done"
    # Failed for now: tried again after a backoff; the effects behind it wait.
    RETRY = "retry"
    # The target refuses it: set aside as dead; the effects behind it go on.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one delivery attempt and what to log about it."""

    outcome: Outcome
    detail: str = ""


# Delivers one pending effect (the stored document) and tells how it went.
Sender = Callable[[Mapping[str, Any]], Awaitable[Attempt]]


def outcome_of(status: int, ok: Collection[int]) -> Outcome:
    """Classify an HTTP answer: an `ok` status is done, a client error (but for a few
    that may pass, like 404 or 429) is refused, anything else is retried."""
    if status in ok:
        return Outcome.DONE
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return Outcome.REFUSED
    return Outcome.RETRY


def _now() -> datetime:
    return datetime.now(UTC)


class Outbox:
    """Writes effects for the deployed `peers` into the service's `outbox` collection."""

    def __init__(self, db: AsyncDatabase[Document], peers: Collection[str]) -> None:
        self._coll = db[_COLLECTION]
        self._peers = frozenset(peers)
        self._dropped: set[str] = set()

    def _deployed(self, effects: Sequence[Effect]) -> list[Effect]:
        for effect in effects:
            if effect.peer not in self._peers and effect.peer not in self._dropped:
                self._dropped.add(effect.peer)
                _log.warning(
                    "outbox: effects for %s are dropped: it is not deployed",
                    effect.peer,
                )
        return [e for e in effects if e.peer in self._peers]

    async def add(
        self, effects: Sequence[Effect], *, session: AsyncClientSession | None = None
    ) -> None:
        """Record effects; pass the session of the transaction making the change."""
        effects = self._deployed(effects)
        if not effects:
            return
        now = _now()
        docs = [
            {
                "_id": ObjectId(),
                "peer": e.peer,
                "method": e.method,
                "path": e.path,
                "body": e.body,
                "ok": list(e.ok),
                "lane": e.lane,
                "state": "pending",
                "request_id": current_request_id(),
                "created_ts": now,
                "next_attempt": now,
                "lease_until": now,
                "attempts": 0,
            }
            for e in effects
        ]
        await self._coll.insert_many(docs, session=session)

    async def pending(self, peer: str | None = None) -> list[Document]:
        """Return the effects not yet delivered, oldest first."""
        query: Document = {"state": "pending"}
        if peer is not None:
            query["peer"] = peer
        return await self._coll.find(query).sort("_id", ASCENDING).to_list()


class OutboxRelay:
    """Background delivery of outbox effects to the configured peers and senders."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        http: httpx.AsyncClient,
        peers: Mapping[str, str | None],
        *,
        senders: Mapping[str, Sender] | None = None,
        poll_interval: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self._coll = db[_COLLECTION]
        self._http = http
        self._peers = {name: url.rstrip("/") for name, url in peers.items() if url}
        self._senders = dict(senders or {})
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._measured = -_MEASURE_EVERY

    @property
    def deployed(self) -> frozenset[str]:
        """The peers delivered to (with an address or a sender): the `Outbox` keeps theirs."""
        return frozenset(self._peers) | frozenset(self._senders)

    def wake(self) -> None:
        """Deliver now instead of at the next poll (call after writing effects)."""
        self._wake.set()

    async def drop_undeployed(self) -> int:
        """Delete the pending effects of peers that are not deployed; return how many."""
        query: Document = {"peer": {"$nin": sorted(self.deployed)}, "state": "pending"}
        dropped = 0
        for peer in await self._coll.distinct("peer", query):
            result = await self._coll.delete_many({"peer": peer, "state": "pending"})
            _log.warning(
                "outbox: %d queued effects for %s dropped: it is not deployed",
                result.deleted_count,
                peer,
            )
            dropped += result.deleted_count
        return dropped

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[OutboxRelay]:
        """Drop what no deployed peer will take, then deliver for the duration of the block."""
        await self.drop_undeployed()
        async with in_background(self._loop(), name="outbox-relay"):
            yield self

    async def _loop(self) -> None:
        while True:
            try:
                await self.deliver_due()
                if time.monotonic() - self._measured >= _MEASURE_EVERY:
                    await self.measure()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive a database hiccup
                _log.exception("outbox delivery pass failed")
            # asyncio.timeout, unlike wait_for on 3.11, never swallows a cancellation that
            # arrives together with a wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def deliver_due(self) -> int:
        """Deliver what is due, in order per peer (per lane); return how many were handled."""
        delivered = 0
        for peer, base_url in self._peers.items():
            send = functools.partial(self._send_http, base_url=base_url)
            delivered += await self._deliver_lane(peer, None, send)
        for peer, sender in self._senders.items():
            lanes = await self._coll.distinct("lane", {"peer": peer, "state": "pending"})
            counts = await asyncio.gather(
                *(self._deliver_lane(peer, lane, sender) for lane in lanes)
            )
            delivered += sum(counts)
        return delivered

    async def _deliver_lane(self, peer: str, lane: str | None, send: Sender) -> int:
        """Deliver a lane's effects oldest first, up to the first that cannot go now."""
        delivered = 0
        while True:
            batch = (
                await self._coll.find({"peer": peer, "state": "pending", "lane": lane})
                .sort("_id", ASCENDING)
                .limit(_BATCH)
                .to_list()
            )
            for head in batch:
                if not await self._deliver(head, send):
                    return delivered
                delivered += 1
            if len(batch) < _BATCH:
                return delivered

    async def _deliver(self, head: Document, send: Sender) -> bool:
        """Send one effect unless it waits for a retry or another replica holds it."""
        now = _now()
        if head["next_attempt"] > now or head["lease_until"] > now:
            return False
        claimed = await self._coll.find_one_and_update(
            {"_id": head["_id"], "lease_until": head["lease_until"]},
            {"$set": {"lease_until": now + _LEASE}},
        )
        if claimed is None:  # another replica took it
            return False
        attempt = await send(head)
        OUTBOX_DELIVERIES.labels(head["peer"], attempt.outcome.value).inc()
        if attempt.outcome is Outcome.DONE:
            await self._coll.delete_one({"_id": head["_id"]})
            return True
        if attempt.outcome is Outcome.REFUSED:
            # Retrying cannot help. Keep it for inspection and let the effects behind it go on.
            _log.error(
                "outbox: %s refused %s %s: %s",
                head["peer"],
                head["method"],
                head["path"],
                attempt.detail[:500],
            )
            await self._coll.update_one(
                {"_id": head["_id"]}, {"$set": {"state": "dead", "last_error": attempt.detail}}
            )
            return True
        await self._retry_later(head, attempt.detail)
        return False

    async def _send_http(self, head: Mapping[str, Any], base_url: str) -> Attempt:
        """Make the effect's call on the peer's internal API."""
        headers = {IDEMPOTENCY_KEY_HEADER: str(head["_id"])}
        if head.get("request_id"):
            headers[REQUEST_ID_HEADER] = head["request_id"]
        try:
            response = await self._http.request(
                head["method"], base_url + head["path"], json=head["body"], headers=headers
            )
        except httpx.HTTPError as exc:
            return Attempt(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        return Attempt(outcome_of(status, head["ok"]), f"HTTP {status}: {response.text[:500]}")

    async def _retry_later(self, head: Document, error: str) -> None:
        attempts = head["attempts"] + 1
        delay = min(self._max_backoff, 0.5 * 2 ** min(attempts, 10))
        later = _now() + timedelta(seconds=delay)
        _log.warning(
            "outbox: %s %s failed (%s); retry in %.1fs", head["peer"], head["path"], error, delay
        )
        await self._coll.update_one(
            {"_id": head["_id"]},
            {
                "$set": {
                    "attempts": attempts,
                    "next_attempt": later,
                    "lease_until": _now(),
                    "last_error": error,
                }
            },
        )

    async def measure(self) -> None:
        """Set the backlog and oldest-effect gauges of every deployed peer.

        A count over the index's (peer, state) prefix and, per lane, the head of its queue in
        index order: no effect is read beyond one per lane.
        """
        self._measured = time.monotonic()
        now = _now()
        for peer in sorted(self.deployed):
            pending: Document = {"peer": peer, "state": "pending"}
            OUTBOX_BACKLOG.labels(peer).set(await self._coll.count_documents(pending))
            lanes = await self._coll.distinct("lane", pending) if peer in self._senders else [None]
            oldest = now
            for lane in lanes:
                head = await self._coll.find_one(
                    {**pending, "lane": lane}, sort=[("_id", ASCENDING)]
                )
                if head is not None:
                    oldest = min(oldest, head["created_ts"])
            OUTBOX_OLDEST_AGE.labels(peer).set((now - oldest).total_seconds())
