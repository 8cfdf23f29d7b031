"""The relay's windows on a peer's outbox queue: which relay reads it, reading it oldest
first at a cost that does not grow with the queue, choosing what may go, removing what went.

One relay at a time delivers a peer's queue: the one holding the peer's lease
(`PeerLeases`), a document per peer that it renews while it works and that another replica
takes over once it has run out. So the effects themselves need no claim: a window costs
its read, the results that are not deliveries, and the removal of what was delivered.

The relay reads a queue through the index `(peer, state, _id)`. Sorted by `_id` with a limit,
a query on the index's prefix costs some databases (the embedded one among them) in
proportion to the whole queue: they gather every match, then sort and cut. A query whose
`_id` is bounded on both sides, with no other condition beside the prefix, costs in
proportion to what lies in its range. So the reads and most removals take that shape (see
`removals` for the rest). An ObjectId starts with the second it was made:
`QueueScan` walks the queue in time ranges, each sized from how densely the one before it
was filled.

A pass starts from a floor below which nothing is pending: the oldest effect the previous
pass left in the queue, but never later than `_SETTLE` before that pass began. An effect's
id is made before its transaction commits, so a slow transaction may add an effect older
than what a pass has read; the database ends a transaction long before `_SETTLE` has
passed. Every `_SWEEP` seconds a pass starts from the beginning of time instead, in case a
writer's clock was off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bson import ObjectId
from pymongo import ASCENDING, DeleteMany
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document

__all__ = [
    "LEASES",
    "PeerLeases",
    "QueueScan",
    "Queues",
    "Results",
    "group_requests",
    "lanes_due",
    "object_id_at",
    "removals",
    "settled",
]

_SETTLE: Final = 120.0  # seconds; the database ends a transaction after 60
_SWEEP: Final = 300.0  # seconds between two passes from the beginning of time
_ORIGIN: Final = ObjectId(b"\x00" * 12)
_IDS_PER_DELETE: Final = 100  # the list is compared with each document: keep it short
_MAX_SPAN: Final = float(2**31)  # seconds: from the origin to now in one range
LEASES: Final = "outbox_leases"  # one document per peer: the relay delivering it, and until when


def object_id_at(seconds: float) -> ObjectId:
    """The lowest ObjectId made at `seconds` (since the epoch) or later."""
    return ObjectId.from_datetime(datetime.fromtimestamp(max(0.0, seconds), UTC))


def settled() -> ObjectId:
    """Every effect with a lower id than this one that will ever be written has been."""
    return object_id_at(time.time() - _SETTLE)


def _seconds(oid: ObjectId) -> float:
    return oid.generation_time.timestamp()


@dataclass(slots=True)
class _Peer:
    """Where a peer's next pass starts, and how wide its ranges were."""

    floor: ObjectId = _ORIGIN
    span: float = 1.0
    swept: float = float("-inf")  # time.monotonic() of the last pass from the origin


@dataclass(slots=True)
class Queues:
    """The scan state of every peer of one relay."""

    coll: AsyncCollection[Document]
    batch: int
    _peers: dict[str, _Peer] = field(default_factory=dict, init=False)

    def scan(self, peer: str) -> QueueScan:
        """A pass over `peer`'s pending effects, `batch` at most a window."""
        state = self._peers.setdefault(peer, _Peer())
        if time.monotonic() - state.swept >= _SWEEP:
            state.floor, state.swept = _ORIGIN, time.monotonic()
        return QueueScan(self.coll, peer, state, self.batch)

    async def oldest(self, peer: str) -> Document | None:
        """The peer's oldest pending effect (its scan state left as it was)."""
        state = self._peers.get(peer) or _Peer()
        async for window in QueueScan(self.coll, peer, replace(state), 1):
            return window[0]
        return None


class QueueScan:
    """One pass over a peer's queue: `async for window in scan` yields its pending effects
    oldest first (never an empty window); `left(doc)` notes an effect the pass leaves in the
    queue; `finish()` sets where the next pass starts."""

    def __init__(self, coll: AsyncCollection[Document], peer: str, state: _Peer, limit: int):
        self._coll = coll
        self._peer = peer
        self._state = state
        self._limit = limit
        self._settled = settled()
        self._end_s = float(
            int(time.time()) + 1
        )  # what is written after the pass waits for the next
        self._end = object_id_at(self._end_s)
        self._low, self._after = state.floor, False  # the next range starts at (or after) low
        self._oldest_left: ObjectId | None = None

    def __aiter__(self) -> QueueScan:
        return self

    async def __anext__(self) -> list[Document]:
        while self._low < self._end:
            start = _seconds(self._low)
            # No narrower than a second (an ObjectId's resolution), no further than the end.
            high = object_id_at(min(self._end_s, start + self._state.span))
            bounds = {"$gt" if self._after else "$gte": self._low, "$lt": high}
            query: Document = {"peer": self._peer, "state": "pending", "_id": bounds}
            window = (
                await self._coll.find(query).sort("_id", ASCENDING).limit(self._limit).to_list()
            )
            if len(window) == self._limit:
                # The range holds more: go on after the window, as wide as its effects lay.
                self._low, self._after = window[-1]["_id"], True
                lay = _seconds(window[-1]["_id"]) - _seconds(window[0]["_id"])
                self._state.span = max(1.0, lay)
            else:
                self._low, self._after = high, False
                if 2 * len(window) < self._limit:
                    self._state.span = min(2 * self._state.span, _MAX_SPAN)
            if window:
                return window
        raise StopAsyncIteration

    def left(self, doc: Document) -> None:
        """`doc` stays in the queue after this pass (not due, leased elsewhere, retried)."""
        if self._oldest_left is None or doc["_id"] < self._oldest_left:
            self._oldest_left = doc["_id"]

    def finish(self) -> None:
        """Start the next pass at the oldest effect left, where this one stopped if it did
        not reach the end, and no later than the settled time."""
        floor = min(self._settled, self._low)
        if self._oldest_left is not None:
            floor = min(floor, self._oldest_left)
        self._state.floor = floor


@dataclass(slots=True)
class Results:
    """What delivering one window decided, written back in a few bulk writes."""

    window: list[Document] = field(default_factory=list)
    done: list[ObjectId] = field(default_factory=list)
    dead: list[tuple[Document, str]] = field(default_factory=list)
    retry: list[tuple[Document, str]] = field(default_factory=list)


class PeerLeases:
    """The peers this relay delivers to: it holds their lease in `LEASES`, taken when free
    (or run out), renewed while it works, given up when it stops.

    Another relay's lease is read at most once per its term: until it runs out, this relay
    leaves that peer alone without asking the database.
    """

    def __init__(self, coll: AsyncCollection[Document], term: timedelta) -> None:
        self._coll = coll
        self._term = term
        self._me = ObjectId()
        self._until: dict[str, datetime] = {}  # the end of each lease held (or last seen)
        self._held: set[str] = set()

    async def hold(self, peer: str) -> datetime | None:
        """The end of this relay's lease on `peer`, renewed once a quarter of it has passed;
        None while another relay holds it."""
        now = datetime.now(UTC)
        until = self._until.get(peer)
        if until is not None and peer in self._held and until - now > self._term * 3 / 4:
            return until
        if until is not None and peer not in self._held and until > now:
            return None
        free = {"$or": [{"$eq": ["$holder", self._me]}, {"$lte": ["$until", now]}]}
        new_until = now + self._term
        try:
            taken = await self._coll.update_one(
                {"_id": peer},
                [
                    {
                        "$set": {
                            "holder": {"$cond": [free, self._me, "$holder"]},
                            "until": {"$cond": [free, new_until, "$until"]},
                        }
                    }
                ],
                upsert=True,
            )
        except DuplicateKeyError:  # another relay created the peer's lease just now
            taken = None
        if taken is not None and (taken.modified_count or taken.upserted_id is not None):
            self._held.add(peer)
            self._until[peer] = new_until
            return new_until
        self._held.discard(peer)
        lease = await self._coll.find_one({"_id": peer})
        self._until[peer] = lease["until"] if lease else now
        return None

    async def release(self) -> None:
        """Give up every lease held, so that another relay takes over at once."""
        for peer in sorted(self._held):
            await self._coll.update_one(
                {"_id": peer, "holder": self._me}, {"$set": {"until": datetime.now(UTC)}}
            )
        self._held.clear()
        self._until.clear()


def lanes_due(
    window: list[Document], now: datetime, blocked: set[Any]
) -> dict[Any, list[Document]]:
    """The effects of `window` that may go now, per lane, oldest first.

    A pass reads the peer's queue in `_id` order, so the earlier effects of a lane are in
    this window, in an earlier one of the pass, or gone: a lane stops at its first effect
    that waits for a retry, and what follows it in the lane waits too (`blocked` carries
    that over to the later windows of the pass).
    """
    lanes: dict[Any, list[Document]] = {}
    for doc in window:
        lane = doc.get("lane")
        if lane in blocked:
            continue
        if doc["next_attempt"] > now:
            blocked.add(lane)
            continue
        lanes.setdefault(lane, []).append(doc)
    return lanes


def group_requests(heads: list[Document], limit: int) -> list[list[Document]]:
    """Group one effect per lane into requests: those whose target takes a list are merged
    (same method, path and accepted statuses, at most `limit` items a request)."""
    requests: list[list[Document]] = []
    open_: dict[tuple[Any, ...], tuple[list[Document], int]] = {}
    for doc in heads:
        if not (doc.get("merge") and isinstance(doc["body"], list)):
            requests.append([doc])
            continue
        target = (doc["method"], doc["path"], tuple(doc["ok"]))
        docs, items = open_.get(target, ([], limit))
        if items + len(doc["body"]) > limit:
            docs, items = [], 0
            requests.append(docs)
        docs.append(doc)
        open_[target] = (docs, items + len(doc["body"]))
    return requests


def removals(results: Results, peer: str) -> list[DeleteMany]:
    """The deletes of what was delivered.

    A run of delivered effects that nothing else lay between when the window was read goes
    as one range of the index, once no effect can be written into it any more (`settled`):
    its cost does not grow with the queue. The rest, written lately, go by their ids, at most
    `_IDS_PER_DELETE` a statement: the database looks each up in the index, and compares
    every document it reads with the whole list.
    """
    done, bound = set(results.done), settled()
    runs: list[list[ObjectId]] = [[]]
    for doc in results.window:
        if doc["_id"] in done and doc["_id"] < bound:
            runs[-1].append(doc["_id"])
        elif runs[-1]:
            runs.append([])
    deletes = [
        DeleteMany({"peer": peer, "state": "pending", "_id": {"$gte": run[0], "$lte": run[-1]}})
        for run in runs
        if run
    ]
    fresh = sorted(i for i in done if i >= bound)
    deletes += [
        DeleteMany(
            {"peer": peer, "state": "pending", "_id": {"$in": fresh[n : n + _IDS_PER_DELETE]}}
        )
        for n in range(0, len(fresh), _IDS_PER_DELETE)
    ]
    return deletes
