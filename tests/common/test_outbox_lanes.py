"""The outbox relay at scale: lanes in parallel and in order, merged requests, replicas,
a relay stopped mid-batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from common.core.outbox import Effect, Outbox, OutboxRelay
from tests.toolkit import LiveServer, eventually

INVENTORY = {"inventory"}
STATUS = "/tenants//devices/status/accepted"


class _Peer(LiveServer):
    """A real HTTP peer that records each request (path, body, keys), answers a status per
    path, may hold requests until released, and counts how many it serves at once."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any, str]] = []
        self.status: dict[str, int] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = self.most_in_flight = 0
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["POST", "PATCH", "PUT", "DELETE"])
        async def record(path: str, request: Request) -> Response:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                body = await request.body()
                await asyncio.sleep(random.uniform(0, 0.003))
                self.received.append(
                    ("/" + path, json.loads(body or b"null"), request.headers["Idempotency-Key"])
                )
                await self.gate.wait()
                return Response(status_code=self.status.get("/" + path, 204))
            finally:
                self.in_flight -= 1

        super().__init__(app)

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.received]


@pytest.fixture
async def peer() -> AsyncIterator[_Peer]:
    async with _Peer() as server:
        try:
            yield server
        finally:
            server.gate.set()  # a held request would keep the server from stopping


def _device_effects(devices: int, per_device: int) -> list[Effect]:
    """Effects of many devices, interleaved as enrollments write them."""
    return [
        Effect("inventory", "PATCH", f"/d{d}/{n}", [{"n": n}], lane=f"d{d}")
        for n in range(per_device)
        for d in range(devices)
    ]


def _assert_lane_order(paths: list[str], devices: int, per_device: int) -> None:
    """Each device's effects were first received in the order they were written."""
    for d in range(devices):
        firsts = list(dict.fromkeys(p for p in paths if p.startswith(f"/d{d}/")))
        assert firsts == [f"/d{d}/{n}" for n in range(per_device)], firsts


class TestLanes:
    async def test_devices_go_in_parallel_each_in_order(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, INVENTORY).add(_device_effects(40, 4))
        relay = OutboxRelay(db, http, {"inventory": peer.url}, concurrency=8, batch=50)

        assert await relay.deliver_due() == 160

        assert await Outbox(db, INVENTORY).pending() == []
        assert len(peer.received) == 160
        _assert_lane_order(peer.paths(), 40, 4)
        assert 1 < peer.most_in_flight <= 8

    async def test_a_lane_held_by_retries_holds_nobody_else(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, INVENTORY).add(_device_effects(3, 3))
        peer.status["/d1/0"] = 500
        relay = OutboxRelay(db, http, {"inventory": peer.url}, max_backoff=0.0)

        assert await relay.deliver_due() == 6
        assert sorted(peer.paths()) == [
            "/d0/0",
            "/d0/1",
            "/d0/2",
            "/d1/0",
            "/d2/0",
            "/d2/1",
            "/d2/2",
        ]
        pending = await Outbox(db, INVENTORY).pending()
        assert [(p["path"], p["attempts"]) for p in pending] == [
            ("/d1/0", 1),
            ("/d1/1", 0),
            ("/d1/2", 0),
        ]

        peer.status.clear()
        assert await relay.deliver_due() == 3
        assert peer.paths()[-3:] == ["/d1/0", "/d1/1", "/d1/2"]


def _status(device: str, lane: str | None = None) -> Effect:
    return Effect("inventory", "POST", STATUS, [{"id": device}], lane=lane or device, merge=True)


class TestMerging:
    async def test_status_changes_of_many_devices_go_as_one_list(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        outbox = Outbox(db, INVENTORY)
        await outbox.add([_status(f"d{n}") for n in range(5)])
        # Another target, and a second change of d0 that must wait for the first.
        await outbox.add([_status("d0"), Effect("inventory", "PATCH", "/d1", [], lane="d1")])
        ids = [str(e["_id"]) for e in await outbox.pending()]
        relay = OutboxRelay(db, http, {"inventory": peer.url}, merge_limit=3)

        assert await relay.deliver_due() == 7

        merged = [(body, key) for path, body, key in peer.received if path == STATUS]
        # The two lists of the first round are sent at once; d0's second change comes after.
        assert sorted(merged[:2], key=lambda request: request[1]) == [
            ([{"id": "d0"}, {"id": "d1"}, {"id": "d2"}], ",".join(ids[0:3])),
            ([{"id": "d3"}, {"id": "d4"}], ",".join(ids[3:5])),
        ]
        assert merged[2:] == [([{"id": "d0"}], ids[5])]
        assert ("/d1", [], ids[6]) in peer.received

    async def test_a_refused_list_is_retried_item_by_item(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, INVENTORY).add([_status("good-1"), _status("bad"), _status("good-2")])
        app = FastAPI()
        lists: list[list[str]] = []

        @app.post(STATUS)
        async def statuses(request: Request) -> Response:
            ids = [item["id"] for item in await request.json()]
            lists.append(ids)
            return Response(status_code=400 if "bad" in ids else 200)

        async with LiveServer(app) as server:
            relay = OutboxRelay(db, http, {"inventory": server.url})
            assert await relay.deliver_due() == 3

        assert lists == [["good-1", "bad", "good-2"], ["good-1"], ["bad"], ["good-2"]]
        dead = await db.outbox.find({"state": "dead"}).to_list()
        assert [d["body"] for d in dead] == [[{"id": "bad"}]]
        assert await Outbox(db, INVENTORY).pending() == []


class TestReplicas:
    async def test_two_relays_on_one_outbox_deliver_each_effect_once_in_order(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, INVENTORY).add(_device_effects(30, 4))
        replicas = [
            OutboxRelay(db, http, {"inventory": peer.url}, concurrency=4, batch=25)
            for _ in range(2)
        ]

        async def drained() -> bool:
            await asyncio.gather(*(relay.deliver_due() for relay in replicas))
            return await Outbox(db, INVENTORY).pending() == []

        await eventually(drained, what="both replicas drained the outbox")
        keys = [key for _, _, key in peer.received]
        assert len(keys) == len(set(keys)) == 120
        _assert_lane_order(peer.paths(), 30, 4)


class TestCrash:
    async def test_a_relay_stopped_mid_batch_loses_nothing(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        # A relay keeps nothing but what it wrote: stopped dead while its batch is in flight
        # (claimed, sent, nothing recorded), it leaves what a killed process leaves.
        db = mongo[db_name]
        await Outbox(db, INVENTORY).add(_device_effects(20, 3))
        peer.gate.clear()  # requests are received, then held unanswered
        doomed = OutboxRelay(db, http, {"inventory": peer.url}, lease=1.0, batch=40)
        task = asyncio.create_task(doomed.deliver_due())
        await eventually(lambda: len(peer.received) >= 10, what="a batch in flight")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert len(peer.received) < 60
        peer.gate.set()

        relay = OutboxRelay(db, http, {"inventory": peer.url}, poll_interval=0.1)
        async with relay.running():

            async def drained() -> bool:
                return await Outbox(db, INVENTORY).pending() == []

            await eventually(drained, what="the survivor delivered what the stopped one held")

        # Everything arrived; what the stopped relay had in flight came again, same key.
        keys = [key for _, _, key in peer.received]
        assert len(set(keys)) == 60
        assert len(keys) > 60
        _assert_lane_order(peer.paths(), 20, 3)
