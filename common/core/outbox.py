"""The outbox: cross-service effects stored with the change that causes them, then delivered.

A store writes `Effect`s into its own database in the same transaction as the change (so a
crash can never keep one without the other); `OutboxRelay` sends them to the peers' internal
APIs, retrying with backoff until the peer accepts. Delivery is at-least-once: every request
carries the effect's id as `Idempotency-Key`, the same on each retry, so receivers can
recognise a repeat.

Effects are ordered per lane: an effect is never delivered before an earlier effect of its
peer in the same lane (device effects use the device id as lane; effects without a lane share
one lane per peer). Different lanes go concurrently, and effects whose target takes a list
are merged into one request (see `OutboxRelay`).

A service may also deliver effects itself (webhooks, cloud APIs): it registers a `Sender`
for a peer name, and the relay hands it the effects of that peer one at a time, lanes in
parallel, in the same way.

A peer with neither an address nor a sender is not deployed: effects for it are not written
(logged once per peer), and those written while it was deployed are deleted, with a log
line, when the relay starts. Otherwise they would pile up forever, for nobody.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp
from bson import ObjectId
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from common.core.background import in_background
from common.core.metrics import OUTBOX_BACKLOG, OUTBOX_DELIVERIES, OUTBOX_OLDEST_AGE
from common.core.mongo import Document
from common.core.outbox_window import (
    LEASES,
    PeerLeases,
    Queues,
    Results,
    group_requests,
    lanes_due,
    removals,
)
from common.core.requestid import REQUEST_ID_HEADER, current_request_id

__all__ = [
    "COLLECTION",
    "IDEMPOTENCY_KEY_HEADER",
    "OUTBOX_INDEXES",
    "Attempt",
    "Effect",
    "Outbox",
    "OutboxRelay",
    "Outcome",
    "Sender",
    "item_keys",
    "outcome_of",
]

_log = logging.getLogger("common.core.outbox")
COLLECTION: Final = "outbox"
_RETRYABLE_4XX: Final = frozenset({404, 408, 425, 429})
# Answers that say the peer as a whole is unavailable, not that one effect failed.
_UNAVAILABLE: Final = frozenset({502, 503, 504})
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"
_MEASURE_EVERY: Final = 10.0  # seconds between two counts of the backlog, at least
# The count costs some databases in proportion to the backlog: at most this share of the time.
_MEASURE_SHARE: Final = 0.05
_RELEASE_WITHIN: Final = 1.0  # seconds a stopping relay spends giving its leases up, at most

# One index serves each peer's queue in order: the relay reads its oldest pending effects.
OUTBOX_INDEXES: Final = {
    COLLECTION: [IndexModel([("peer", ASCENDING), ("state", ASCENDING), ("_id", ASCENDING)])]
}


@dataclass(frozen=True, slots=True)
class Effect:
    """One call to make on a peer's internal API (or one delivery a `Sender` makes).

    `lane` orders the effects of a peer: each lane is delivered in order, independently of
    the others. `merge` says the target takes a list in its body: pending effects with the
    same method, path and accepted statuses (from different lanes) may go as one request
    whose body is their lists joined.
    """

    peer: str
    method: str
    path: str
    body: Any = None
    ok: Collection[int] = field(default=(200, 201, 202, 204))
    lane: str | None = None
    merge: bool = False


class Outcome(enum.Enum):
    """How a delivery attempt ended, and so what becomes of the effect."""

    # Delivered (or nothing is left to deliver): the effect is removed.
    DONE = "done"
    # Failed for now: tried again after a backoff; the effects behind it in its lane wait.
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


def item_keys(header: str | None, items: int) -> list[str | None]:
    """The idempotency key of each item of a list body.

    A merged request carries one key per item, comma-separated, in the order of the items;
    a request of one effect carries its one key, which then holds for all its items.
    """
    if header is None:
        return [None] * items
    keys = header.split(",")
    return list(keys) if len(keys) == items else [header] * items


def _now() -> datetime:
    return datetime.now(UTC)


class Outbox:
    """Writes effects for the deployed `peers` into the service's `outbox` collection."""

    def __init__(self, db: AsyncDatabase[Document], peers: Collection[str]) -> None:
        self._coll = db[COLLECTION]
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
                "merge": e.merge,
                "state": "pending",
                "request_id": current_request_id(),
                "created_ts": now,
                "next_attempt": now,
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


# Sends one request made of one or more effects (several only when merged).
_Send = Callable[[list[Document]], Awaitable[Attempt]]


class OutboxRelay:
    """Background delivery of outbox effects to the configured peers and senders.

    Each pass reads the queue of every peer whose lease this relay holds (replicas of the
    service share the peers, one relay a peer at a time) oldest first, a window (`batch`
    effects) at a time, with one query over a bounded range of the index (`outbox_window`);
    takes from it the effects each lane may deliver now; delivers them in rounds, one effect
    per lane a round, up to `concurrency` requests in flight per peer, merging what can be
    merged; and writes the results back in bulk (then deletes what was delivered). An effect
    retried holds its lane; other lanes go on. A peer that cannot be reached (connection
    error, 502, 503 or 504) is paused, with the same backoff as an effect, instead of being
    tried once per pending lane. A pass starts `gather` seconds after the previous one began
    at the earliest: under load, the effects written meanwhile go in the same windows, with
    fewer and larger statements.

    It also keeps the outbox's metrics (`common.core.metrics`): the deliveries by outcome as
    they happen, and every few seconds the backlog and the age of the oldest effect per
    peer. Their cost does not depend on how often they are scraped; the count's grows with
    the backlog, so it is taken less often when it takes long.
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        http: aiohttp.ClientSession,
        peers: Mapping[str, str | None],
        *,
        senders: Mapping[str, Sender] | None = None,
        poll_interval: float = 1.0,
        max_backoff: float = 60.0,
        concurrency: int = 32,
        batch: int = 1000,
        merge_limit: int = 100,
        lease: float = 30.0,
        gather: float = 0.5,
    ) -> None:
        self._coll = db[COLLECTION]
        self._http = http
        self._peers = {name: url.rstrip("/") for name, url in peers.items() if url}
        self._senders = dict(senders or {})
        self._poll_interval = poll_interval
        self._gather = gather
        self._max_backoff = max_backoff
        self._batch = batch
        self._merge_limit = merge_limit
        self._lease = timedelta(seconds=lease)
        self._leases = PeerLeases(db[LEASES], self._lease)
        self._queues = Queues(self._coll, batch)
        self._slots = {peer: asyncio.Semaphore(concurrency) for peer in self.deployed}
        self._failures: dict[str, int] = {}
        self._paused_until: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._next_measure = 0.0  # time.monotonic() of the next count of the backlogs

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
        try:
            async with in_background(self._loop(), name="outbox-relay"):
                yield self
        finally:
            # A lease not given up runs out by itself: the stop does not wait long for it.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_RELEASE_WITHIN):
                    await self.release()

    async def release(self) -> None:
        """Give up the leases on the peers this relay delivers to, so that another relay
        takes them over at once (`running` does on leaving)."""
        await self._leases.release()

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.deliver_due()
                if time.monotonic() >= self._next_measure:
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
            # Effects written meanwhile go together: fewer, larger statements under load.
            await asyncio.sleep(started + self._gather - time.monotonic())

    async def deliver_due(self) -> int:
        """Deliver what is due, all peers at once; return how many effects were handled."""
        passes = [
            self._deliver_peer(peer, functools.partial(self._send_http, peer, url), merge=True)
            for peer, url in self._peers.items()
        ]
        passes += [
            self._deliver_peer(peer, functools.partial(_send_one, sender), merge=False)
            for peer, sender in self._senders.items()
        ]
        return sum(await asyncio.gather(*passes))

    async def _deliver_peer(self, peer: str, send: _Send, *, merge: bool) -> int:
        """Deliver a peer's queue window by window, oldest first, up to what cannot go now
        (nothing while another relay holds the peer's lease)."""
        handled = 0
        blocked: set[Any] = set()
        scan = self._queues.scan(peer)
        while not self._paused(peer) and (until := await self._leases.hold(peer)):
            if (window := await anext(scan, None)) is None:
                break
            lanes = lanes_due(window, _now(), blocked)
            done = await self._deliver_lanes(
                window, lanes, until, send, merge=merge, blocked=blocked
            )
            handled += len(done)
            if left := next((doc for doc in window if doc["_id"] not in done), None):
                scan.left(left)
        scan.finish()
        return handled

    async def _deliver_lanes(
        self,
        window: list[Document],
        lanes: dict[Any, list[Document]],
        until: datetime,
        send: _Send,
        *,
        merge: bool,
        blocked: set[Any],
    ) -> set[ObjectId]:
        """Deliver lanes in rounds (each lane's next effect, all lanes at once); return the
        ids of the effects done with (delivered or set aside)."""
        peer = window[0]["peer"]
        results = Results(window)
        queues = {lane: collections.deque(docs) for lane, docs in lanes.items()}
        # Stop well within the lease, so that no other relay takes what is in flight.
        deadline = until - self._lease / 2
        while queues:
            if self._paused(peer) or _now() > deadline:
                blocked.update(queues)
                break
            heads = [queue.popleft() for queue in queues.values()]
            requests = group_requests(heads, self._merge_limit) if merge else [[h] for h in heads]
            attempts = await asyncio.gather(*(self._attempt(peer, send, r) for r in requests))
            for docs, outcomes in zip(requests, attempts, strict=True):
                for doc, attempt in zip(docs, outcomes, strict=True):
                    if attempt.outcome is Outcome.DONE:
                        results.done.append(doc["_id"])
                    elif attempt.outcome is Outcome.REFUSED:
                        results.dead.append((doc, attempt.detail))
                    else:  # the lane waits for this one
                        results.retry.append((doc, attempt.detail))
                        blocked.add(lane := doc.get("lane"))
                        queues.pop(lane)
            queues = {lane: queue for lane, queue in queues.items() if queue}
        await self._write(results, peer)
        return {*results.done, *(doc["_id"] for doc, _ in results.dead)}

    async def _attempt(self, peer: str, send: _Send, docs: list[Document]) -> list[Attempt]:
        """Send one request; a merged one that is refused is retried effect by effect, so
        that only the effects the peer refuses are set aside."""
        async with self._slots[peer]:
            attempt = await send(docs)
        if attempt.outcome is Outcome.REFUSED and len(docs) > 1:
            return [(await self._attempt(peer, send, [doc]))[0] for doc in docs]
        OUTBOX_DELIVERIES.labels(peer, attempt.outcome.value).inc(len(docs))
        return [attempt] * len(docs)

    async def _send_http(self, peer: str, base_url: str, docs: list[Document]) -> Attempt:
        """Make the effects' call on the peer's internal API (their lists joined if merged)."""
        first = docs[0]
        if len(docs) == 1:
            body, key = first["body"], str(first["_id"])
        else:
            body = [item for doc in docs for item in doc["body"]]
            key = ",".join(str(doc["_id"]) for doc in docs for _ in doc["body"])
        headers = {IDEMPOTENCY_KEY_HEADER: key, "Content-Type": "application/json"}
        if first.get("request_id"):
            headers[REQUEST_ID_HEADER] = first["request_id"]
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._http.request(
                first["method"], base_url + first["path"], data=data, headers=headers
            ) as response:
                status, detail = response.status, (await response.read())[:500]
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._pause(peer)
            return Attempt(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
        outcome = outcome_of(status, first["ok"])
        if status in _UNAVAILABLE:
            self._pause(peer)
        elif outcome is Outcome.DONE:
            self._failures.pop(peer, None)
        return Attempt(outcome, f"HTTP {status}: {detail.decode(errors='replace')}")

    async def measure(self) -> None:
        """Set the backlog and oldest-effect gauges of every deployed peer: a count over the
        index's (peer, state) prefix and the first effect of the queue."""
        started, now = time.monotonic(), _now()
        for peer in sorted(self.deployed):
            pending: Document = {"peer": peer, "state": "pending"}
            OUTBOX_BACKLOG.labels(peer).set(await self._coll.count_documents(pending))
            head = await self._queues.oldest(peer)
            oldest = now if head is None else head["created_ts"]
            OUTBOX_OLDEST_AGE.labels(peer).set((now - oldest).total_seconds())
        spent = time.monotonic() - started
        self._next_measure = time.monotonic() + max(_MEASURE_EVERY, spent / _MEASURE_SHARE)

    def _backoff(self, failures: int) -> float:
        return min(self._max_backoff, 0.5 * 2.0 ** min(failures, 10))

    def _pause(self, peer: str) -> None:
        """The peer cannot be reached: try it again after a backoff (once per outage step)."""
        if self._paused(peer):
            return
        failures = self._failures[peer] = self._failures.get(peer, 0) + 1
        self._paused_until[peer] = time.monotonic() + self._backoff(failures)

    def _paused(self, peer: str) -> bool:
        return self._paused_until.get(peer, 0.0) > time.monotonic()

    async def _write(self, results: Results, peer: str) -> None:
        """Record a window's results: one bulk write for what was not delivered, then the
        deletes of what was."""
        now = _now()
        changes: list[UpdateOne] = []
        for doc, detail in results.dead:
            # Retrying cannot help. Keep it for inspection and let the effects behind it go on.
            args = (doc["peer"], doc["method"], doc["path"], detail[:500])
            _log.error("outbox: %s refused %s %s: %s", *args)
            changes.append(
                UpdateOne(
                    {"_id": doc["_id"]},
                    {"$set": {"state": "dead", "last_error": detail}},
                )
            )
        for doc, detail in results.retry:
            attempts = doc["attempts"] + 1
            later = now + timedelta(seconds=self._backoff(attempts))
            update = {"attempts": attempts, "next_attempt": later, "last_error": detail}
            changes.append(UpdateOne({"_id": doc["_id"]}, {"$set": update}))
        if results.retry:
            doc, detail = results.retry[0]
            _log.warning(
                "outbox: %d effects for %s failed (first: %s, %s); retried after a backoff",
                len(results.retry),
                doc["peer"],
                doc["path"],
                detail,
            )
        if changes:
            await self._coll.bulk_write(changes, ordered=False)
        if results.done:
            await self._coll.bulk_write(removals(results, peer), ordered=False)


async def _send_one(sender: Sender, docs: list[Document]) -> Attempt:
    """A `Sender` delivers effects one at a time: nothing of theirs is merged."""
    return await sender(docs[0])
