"""The relay's windows on a queue: bounded reads, where a pass starts, what it removes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from common.core import outbox_window
from common.core.mongo import Document
from common.core.outbox import OUTBOX_INDEXES, Effect, Outbox, OutboxRelay
from common.core.outbox_window import object_id_at
from tests.toolkit import LiveServer, eventually
from tests.toolkit.commands import CommandRecorder, assert_indexed, recording

INVENTORY = {"inventory"}


class _Peer(LiveServer):
    """Records the paths it is sent; answers 500 to those in `failing`, else 204."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.failing: set[str] = set()
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["POST", "PATCH"])
        async def record(path: str, request: Request) -> Response:
            await request.body()
            self.paths.append("/" + path)
            return Response(status_code=500 if "/" + path in self.failing else 204)

        super().__init__(app)


@pytest.fixture
async def peer() -> AsyncIterator[_Peer]:
    async with _Peer() as server:
        yield server


@pytest.fixture
async def db(mongo: AsyncMongoClient[Document], db_name: str) -> AsyncDatabase[Document]:
    """The test's database, with the outbox's index as the services create it at start."""
    database = mongo[db_name]
    for name, models in OUTBOX_INDEXES.items():
        await database[name].create_indexes(models)
    return database


async def _written_at(db: AsyncDatabase[Document], path: str, seconds_ago: float) -> None:
    """Move the pending effect for `path` to an id made `seconds_ago`, as if a transaction
    that made it then had committed only now."""
    coll = db["outbox"]
    doc = await coll.find_one({"path": path})
    assert doc is not None
    await coll.delete_one({"_id": doc["_id"]})
    await coll.insert_one({**doc, "_id": object_id_at(time.time() - seconds_ago)})


def _delete_filters(recorded: CommandRecorder) -> list[dict[str, Any]]:
    """The filter of every delete statement recorded, in order."""
    return [
        statement["q"]
        for name, command in recorded.commands
        if name == "delete"
        for statement in command["deletes"]
    ]


class TestRemoval:
    async def test_settled_runs_go_as_ranges_around_what_stays(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Everything written so far counts as settled: no effect can appear between.
        monkeypatch.setattr(outbox_window, "_SETTLE", -2.0)
        await Outbox(db, INVENTORY).add(
            [
                Effect("inventory", "PATCH", f"/d{d}/{n}", lane=f"d{d}")
                for n in range(3)
                for d in range(3)
            ]
        )
        peer.failing.add("/d1/0")
        relay = OutboxRelay(db, http, {"inventory": peer.url}, max_backoff=0.0)

        with recording(db_name) as recorded:
            assert await relay.deliver_due() == 6

        pending = await Outbox(db, INVENTORY).pending()
        assert [p["path"] for p in pending] == ["/d1/0", "/d1/1", "/d1/2"]
        deletes = _delete_filters(recorded)
        # In `_id` order d0/0 d1/0 d2/0 d0/1 d1/1 ...: d1's effects stay, between the runs.
        assert len(deletes) == 4  # [d0/0] [d2/0 d0/1] [d2/1 d0/2] [d2/2]
        assert all(set(q) == {"peer", "state", "_id"} for q in deletes)
        await assert_indexed(mongo, db_name, recorded)

    async def test_fresh_effects_go_by_their_ids_in_the_index(
        self,
        mongo: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(outbox_window, "_IDS_PER_DELETE", 2)
        await Outbox(db, INVENTORY).add(
            [Effect("inventory", "POST", f"/{n}", lane=f"d{n}") for n in range(5)]
        )
        peer.failing.add("/2")
        relay = OutboxRelay(db, http, {"inventory": peer.url}, max_backoff=0.0)

        with recording(db.name) as recorded:
            assert await relay.deliver_due() == 4

        assert [p["path"] for p in await Outbox(db, INVENTORY).pending()] == ["/2"]
        deletes = _delete_filters(recorded)
        assert [len(q["_id"]["$in"]) for q in deletes] == [2, 2]
        assert all(set(q) == {"peer", "state", "_id"} for q in deletes)
        await assert_indexed(mongo, db.name, recorded)


class TestFloor:
    async def test_an_effect_committed_late_is_still_delivered(
        self,
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        relay = OutboxRelay(db, http, {"inventory": peer.url})
        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/first")])
        assert await relay.deliver_due() == 1  # the next pass starts later than before

        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/late")])
        await _written_at(db, "/late", 60)
        assert await relay.deliver_due() == 1
        assert peer.paths == ["/first", "/late"]

    async def test_an_effect_below_the_floor_is_found_by_the_sweep(
        self,
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        relay = OutboxRelay(db, http, {"inventory": peer.url})
        assert await relay.deliver_due() == 0
        # Made an hour ago by a writer whose clock was off: below where passes start.
        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/skewed")])
        await _written_at(db, "/skewed", 3600)
        assert await relay.deliver_due() == 0

        monkeypatch.setattr(outbox_window, "_SWEEP", 0.0)
        assert await relay.deliver_due() == 1
        assert peer.paths == ["/skewed"]

    async def test_a_retried_effect_keeps_the_floor_below_it(
        self,
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/old")])
        await _written_at(db, "/old", 3600)
        peer.failing.add("/old")
        relay = OutboxRelay(db, http, {"inventory": peer.url}, max_backoff=0.0)
        assert await relay.deliver_due() == 0  # from the beginning of time: found, retried

        peer.failing.clear()
        assert await relay.deliver_due() == 1
        assert peer.paths == ["/old", "/old"]


class TestLeases:
    async def test_one_relay_at_a_time_delivers_a_peer(
        self,
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        first = OutboxRelay(db, http, {"inventory": peer.url}, lease=1.0)
        second = OutboxRelay(db, http, {"inventory": peer.url})
        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/a")])
        assert await first.deliver_due() == 1

        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/b")])
        with recording(db.name) as recorded:
            assert await second.deliver_due() == 0  # the first one's lease: read once
            assert await second.deliver_due() == 0  # and not asked again while it lasts
        assert recorded.names == ["update", "find"]

        await asyncio.sleep(1.0)  # the first one stopped: its lease runs out
        assert await second.deliver_due() == 1
        assert await first.deliver_due() == 0
        assert peer.paths == ["/a", "/b"]

    async def test_relays_starting_together_take_the_peer_once(
        self,
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        relays = [OutboxRelay(db, http, {"inventory": peer.url}) for _ in range(4)]
        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/a")])
        handled = await asyncio.gather(*(relay.deliver_due() for relay in relays))
        assert sorted(handled) == [0, 0, 0, 1]
        assert peer.paths == ["/a"]

    async def test_a_relay_that_stops_gives_its_leases_up(
        self,
        db: AsyncDatabase[Document],
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        first = OutboxRelay(db, http, {"inventory": peer.url}, poll_interval=60)
        async with first.running():
            await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/a")])
            first.wake()
            await eventually(lambda: peer.paths == ["/a"])

        await Outbox(db, INVENTORY).add([Effect("inventory", "POST", "/b")])
        second = OutboxRelay(db, http, {"inventory": peer.url})
        assert await second.deliver_due() == 1
        assert peer.paths == ["/a", "/b"]
