"""The outbox: effects written with a change are delivered in order, retried, never lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient, monitoring

from common.core.mongo import Document, transaction
from common.core.outbox import Attempt, Effect, Outbox, OutboxRelay, Outcome
from tests.toolkit import LiveServer, eventually
from tests.toolkit.commands import recording

# The outbox of a service whose one peer, inventory, is deployed.
DEPLOYED = {"inventory"}
# The outbox of a service delivering its own effects with a sender.
HOOKS = {"hooks"}


class _Peer(LiveServer):
    """A real HTTP server that records what it receives and answers a chosen status."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, Any]] = []
        self.keys: list[str | None] = []
        self.status = 204
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["POST", "PATCH", "DELETE", "PUT"])
        async def record(path: str, request: Request) -> Response:
            body = await request.body()
            self.received.append((request.method, "/" + path, body.decode() or None))
            self.keys.append(request.headers.get("Idempotency-Key"))
            return Response(status_code=self.status)

        super().__init__(app)


@pytest.fixture
async def peer() -> AsyncIterator[_Peer]:
    async with _Peer() as server:
        yield server


class TestDelivery:
    async def test_effects_written_in_a_transaction_arrive_in_order(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        outbox = Outbox(db, DEPLOYED)
        async with transaction(mongo) as session:
            await db.things.insert_one({"_id": "d1"}, session=session)
            await outbox.add(
                [
                    Effect("inventory", "PATCH", "/tenants//device/d1", [{"name": "a"}]),
                    Effect("inventory", "DELETE", "/tenants//devices/d1"),
                ],
                session=session,
            )
        relay = OutboxRelay(db, http, {"inventory": peer.url}, poll_interval=0.1)
        async with relay.running():
            relay.wake()

            async def drained() -> bool:
                # Delivered means acknowledged: received by the peer, then removed here.
                return await outbox.pending() == []

            await eventually(drained, what="the outbox drained")
        assert peer.received == [
            ("PATCH", "/tenants//device/d1", '[{"name":"a"}]'),
            ("DELETE", "/tenants//devices/d1", None),
        ]
        assert await outbox.pending() == []

    async def test_effects_written_close_together_go_in_one_pass(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        outbox = Outbox(db, DEPLOYED)
        async with _Peer() as peer:
            relay = OutboxRelay(db, http, {"inventory": peer.url}, poll_interval=60, gather=1.0)
            async with relay.running():
                await outbox.add([Effect("inventory", "POST", "/a", lane="a")])
                relay.wake()
                await eventually(lambda: len(peer.received) == 1)
                with recording(db_name) as recorded:
                    # Written within a second of the last pass, each waking the relay as the
                    # services do: the three wait for the next pass, and go together.
                    for lane in "bcd":
                        await outbox.add([Effect("inventory", "POST", f"/{lane}", lane=lane)])
                        relay.wake()

                    async def drained() -> bool:
                        return await outbox.pending() == []

                    await eventually(drained, what="the outbox drained")
        assert [path for _, path, _ in peer.received] == ["/a", "/b", "/c", "/d"]
        assert recorded.names.count("delete") == 1  # removed together

    async def test_aborted_transaction_leaves_no_effect(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        db = mongo[db_name]
        outbox = Outbox(db, DEPLOYED)
        with contextlib.suppress(RuntimeError):
            async with transaction(mongo) as session:
                await outbox.add([Effect("inventory", "POST", "/x")], session=session)
                raise RuntimeError("the change failed")
        assert await outbox.pending() == []

    async def test_peer_down_then_up(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, DEPLOYED).add([Effect("inventory", "DELETE", "/tenants//devices/d9")])
        server = _Peer()
        relay = OutboxRelay(db, http, {"inventory": server.url}, poll_interval=0.1, max_backoff=0.5)
        assert await relay.deliver_due() == 0
        pending = await Outbox(db, DEPLOYED).pending()
        assert pending[0]["attempts"] == 1
        assert "ClientConnectorError" in pending[0]["last_error"]
        await server.start()
        try:
            async with relay.running():
                await eventually(lambda: server.received != [])
            assert server.received == [("DELETE", "/tenants//devices/d9", None)]
        finally:
            await server.stop()

    async def test_server_errors_are_retried_and_block_later_effects(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, DEPLOYED).add(
            [Effect("inventory", "POST", "/first"), Effect("inventory", "POST", "/second")]
        )
        peer.status = 503
        relay = OutboxRelay(db, http, {"inventory": peer.url})
        assert await relay.deliver_due() == 0
        assert [p for _, p, _ in peer.received] == ["/first"]
        assert len(await Outbox(db, DEPLOYED).pending()) == 2

    async def test_refused_effect_is_set_aside(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, DEPLOYED).add(
            [Effect("inventory", "POST", "/bad"), Effect("inventory", "POST", "/good")]
        )
        peer.status = 400
        relay = OutboxRelay(db, http, {"inventory": peer.url})
        assert await relay.deliver_due() == 2
        assert await Outbox(db, DEPLOYED).pending() == []
        dead = await db.outbox.find({"state": "dead"}).to_list()
        assert [d["path"] for d in dead] == ["/bad", "/good"]

    async def test_a_long_queue_is_read_in_bounded_windows(
        self, mongo_url: str, db_name: str, peer: _Peer, http: aiohttp.ClientSession
    ) -> None:
        finds = _Finds()
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            mongo_url, tz_aware=True, event_listeners=[finds]
        )
        try:
            db = client[db_name]
            await Outbox(db, DEPLOYED).add(
                [Effect("inventory", "POST", f"/{n}") for n in range(250)]
            )
            relay = OutboxRelay(db, http, {"inventory": peer.url}, batch=100)

            assert await relay.deliver_due() == 250
        finally:
            await client.close()

        assert [p for _, p, _ in peer.received] == [f"/{n}" for n in range(250)]
        # The first pass starts from the beginning of time: empty ranges until the queue.
        assert [n for n in finds.returned if n] == [100, 100, 50]
        for filter_ in finds.filters:
            assert set(filter_) == {"peer", "state", "_id"}
            assert set(filter_["_id"]) in ({"$gte", "$lt"}, {"$gt", "$lt"})

    async def test_a_retry_carries_the_same_idempotency_key(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, DEPLOYED).add([Effect("inventory", "POST", "/once")])
        [effect] = await Outbox(db, DEPLOYED).pending()
        peer.status = 503
        relay = OutboxRelay(db, http, {"inventory": peer.url}, max_backoff=0.0)
        assert await relay.deliver_due() == 0
        peer.status = 204
        assert await relay.deliver_due() == 1
        assert peer.keys == [str(effect["_id"]), str(effect["_id"])]
        assert await Outbox(db, DEPLOYED).pending() == []


class _Lanes:
    """A sender that records what it delivers and answers per lane as told."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.outcomes: dict[str, Outcome] = {}

    async def __call__(self, effect: Mapping[str, Any]) -> Attempt:
        self.sent.append((effect["lane"], effect["path"]))
        return Attempt(self.outcomes.get(effect["lane"], Outcome.DONE), "as told")


class TestSenders:
    async def test_lanes_are_delivered_in_order_and_independently(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, HOOKS).add(
            [
                Effect("hooks", "POST", "/a1", lane="a"),
                Effect("hooks", "POST", "/b1", lane="b"),
                Effect("hooks", "POST", "/a2", lane="a"),
                Effect("hooks", "POST", "/b2", lane="b"),
            ]
        )
        sender = _Lanes()
        sender.outcomes["a"] = Outcome.RETRY
        relay = OutboxRelay(db, http, {}, senders={"hooks": sender}, max_backoff=0.0)

        assert await relay.deliver_due() == 2
        assert sorted(sender.sent) == [("a", "/a1"), ("b", "/b1"), ("b", "/b2")]
        pending = await Outbox(db, HOOKS).pending("hooks")
        assert [(p["path"], p["attempts"], p.get("last_error")) for p in pending] == [
            ("/a1", 1, "as told"),
            ("/a2", 0, None),
        ]

        sender.outcomes["a"] = Outcome.DONE
        sender.sent.clear()
        assert await relay.deliver_due() == 2
        assert sender.sent == [("a", "/a1"), ("a", "/a2")]
        assert await Outbox(db, HOOKS).pending() == []

    async def test_two_replicas_deliver_each_effect_once_in_lane_order(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        # iot-manager's webhook and cloud deliveries, with two replicas relaying at once.
        db = mongo[db_name]
        effects = [
            Effect("hooks", "POST", f"/{lane}{n}", lane=lane) for n in range(5) for lane in "abc"
        ]
        await Outbox(db, HOOKS).add(effects)
        sent: list[tuple[str, str]] = []

        async def send(effect: Mapping[str, Any]) -> Attempt:
            await asyncio.sleep(0)  # let the other replica run meanwhile
            sent.append((effect["lane"], effect["path"]))
            return Attempt(Outcome.DONE, "delivered")

        replicas = [OutboxRelay(db, http, {}, senders={"hooks": send}) for _ in range(2)]

        async def drained() -> bool:
            await asyncio.gather(*(relay.deliver_due() for relay in replicas))
            return await Outbox(db, HOOKS).pending() == []

        await eventually(drained, what="both replicas drained the outbox")
        assert sorted(sent) == sorted((e.lane or "", e.path) for e in effects)
        for lane in "abc":
            assert [path for name, path in sent if name == lane] == [
                f"/{lane}{n}" for n in range(5)
            ]

    async def test_a_refused_delivery_is_set_aside(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, HOOKS).add(
            [Effect("hooks", "POST", "/bad", lane="a"), Effect("hooks", "POST", "/good", lane="a")]
        )
        sender = _Lanes()
        sender.outcomes["a"] = Outcome.REFUSED
        relay = OutboxRelay(db, http, {}, senders={"hooks": sender})
        assert await relay.deliver_due() == 2
        dead = await db.outbox.find({"state": "dead"}).sort("_id", 1).to_list()
        assert [(d["path"], d["last_error"]) for d in dead] == [
            ("/bad", "as told"),
            ("/good", "as told"),
        ]

    async def test_a_peer_with_a_sender_is_deployed(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        relay = OutboxRelay(db, http, {"inventory": None}, senders={"hooks": _Lanes()})
        assert relay.deployed == HOOKS
        await Outbox(db, relay.deployed).add([Effect("hooks", "POST", "/x", lane="a")])
        assert await relay.drop_undeployed() == 0
        assert [p["path"] for p in await Outbox(db, HOOKS).pending()] == ["/x"]


class TestPeerNotDeployed:
    async def test_its_effects_are_not_queued(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        db = mongo[db_name]
        relay = OutboxRelay(db, http, {"inventory": peer.url, "deviceconnect": None})
        outbox = Outbox(db, relay.deployed)
        caplog.set_level(logging.WARNING, logger="common.core.outbox")
        for n in range(2):
            async with transaction(mongo) as session:
                await db.things.insert_one({"_id": n}, session=session)
                await outbox.add(
                    [
                        Effect("deviceconnect", "POST", f"/connect/{n}"),
                        Effect("inventory", "POST", f"/inventory/{n}"),
                        Effect("auditlogs", "POST", f"/audit/{n}"),
                    ],
                    session=session,
                )

        assert [(e["peer"], e["path"]) for e in await outbox.pending()] == [
            ("inventory", "/inventory/0"),
            ("inventory", "/inventory/1"),
        ]
        assert await db.things.count_documents({}) == 2
        assert [r.getMessage() for r in caplog.records] == [
            "outbox: effects for deviceconnect are dropped: it is not deployed",
            "outbox: effects for auditlogs are dropped: it is not deployed",
        ]
        assert await relay.deliver_due() == 2
        assert peer.received == [("POST", "/inventory/0", None), ("POST", "/inventory/1", None)]

    async def test_effects_queued_before_are_dropped_at_start(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        db = mongo[db_name]
        # Queued while deviceconnect was deployed; one of them was refused and set aside.
        earlier = Outbox(db, {"inventory", "deviceconnect"})
        await earlier.add(
            [
                Effect("deviceconnect", "POST", "/connect/1"),
                Effect("inventory", "POST", "/inventory/1"),
                Effect("deviceconnect", "POST", "/connect/2"),
            ]
        )
        await db.outbox.insert_one(
            {"peer": "deviceconnect", "path": "/refused", "state": "dead", "body": None}
        )
        relay = OutboxRelay(db, http, {"inventory": peer.url, "deviceconnect": None})
        caplog.set_level(logging.WARNING, logger="common.core.outbox")

        async with relay.running():
            assert await earlier.pending("deviceconnect") == []

            async def delivered() -> bool:
                return await earlier.pending() == []

            await eventually(delivered)

        assert [r.getMessage() for r in caplog.records] == [
            "outbox: 2 queued effects for deviceconnect dropped: it is not deployed"
        ]
        assert peer.received == [("POST", "/inventory/1", None)]
        assert await earlier.pending() == []
        # What a peer refused is kept for inspection.
        assert [d["path"] async for d in db.outbox.find({"state": "dead"})] == ["/refused"]


class _Finds(monitoring.CommandListener):
    """The filter of each `find` and how many documents it returned."""

    def __init__(self) -> None:
        self.filters: list[dict[str, Any]] = []
        self.returned: list[int] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(dict(event.command["filter"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "find":
            self.returned.append(len(event.reply["cursor"]["firstBatch"]))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
