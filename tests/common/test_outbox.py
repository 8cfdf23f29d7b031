"""The outbox: effects written with a change are delivered in order, retried, never lost."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient, monitoring

from common.mongo import Document, transaction
from common.outbox import Effect, Outbox, OutboxRelay
from tests.support import LiveServer, eventually, eventually_async

# The outbox of a service whose one peer, inventory, is deployed.
DEPLOYED = {"inventory"}


class _Peer(LiveServer):
    """A real HTTP server that records what it receives and answers a chosen status."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, Any]] = []
        self.status = 204
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["POST", "PATCH", "DELETE", "PUT"])
        async def record(path: str, request: Request) -> Response:
            body = await request.body()
            self.received.append((request.method, "/" + path, body.decode() or None))
            return Response(status_code=self.status)

        super().__init__(app)


@pytest.fixture
async def peer() -> AsyncIterator[_Peer]:
    server = _Peer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2) as client:
        yield client


class TestDelivery:
    async def test_effects_written_in_a_transaction_arrive_in_order(
        self, mongo: AsyncMongoClient[Document], db_name: str, peer: _Peer, http: httpx.AsyncClient
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
            await eventually(lambda: len(peer.received) == 2)
        assert peer.received == [
            ("PATCH", "/tenants//device/d1", '[{"name":"a"}]'),
            ("DELETE", "/tenants//devices/d1", None),
        ]
        assert await outbox.pending() == []

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
        self, mongo: AsyncMongoClient[Document], db_name: str, http: httpx.AsyncClient
    ) -> None:
        db = mongo[db_name]
        await Outbox(db, DEPLOYED).add([Effect("inventory", "DELETE", "/tenants//devices/d9")])
        server = _Peer()
        relay = OutboxRelay(db, http, {"inventory": server.url}, poll_interval=0.1, max_backoff=0.5)
        assert await relay.deliver_due() == 0
        pending = await Outbox(db, DEPLOYED).pending()
        assert pending[0]["attempts"] == 1
        assert "ConnectError" in pending[0]["last_error"]
        await server.start()
        try:
            async with relay.running():
                await eventually(lambda: server.received != [])
            assert server.received == [("DELETE", "/tenants//devices/d9", None)]
        finally:
            await server.stop()

    async def test_server_errors_are_retried_and_block_later_effects(
        self, mongo: AsyncMongoClient[Document], db_name: str, peer: _Peer, http: httpx.AsyncClient
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
        self, mongo: AsyncMongoClient[Document], db_name: str, peer: _Peer, http: httpx.AsyncClient
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

    async def test_a_long_queue_is_read_in_batches(
        self, mongo_url: str, db_name: str, peer: _Peer, http: httpx.AsyncClient
    ) -> None:
        finds = _FindCounter()
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            mongo_url, tz_aware=True, event_listeners=[finds]
        )
        try:
            db = client[db_name]
            await Outbox(db, DEPLOYED).add(
                [Effect("inventory", "POST", f"/{n}") for n in range(250)]
            )
            relay = OutboxRelay(db, http, {"inventory": peer.url})

            assert await relay.deliver_due() == 250
        finally:
            await client.close()

        assert [p for _, p, _ in peer.received] == [f"/{n}" for n in range(250)]
        assert finds.count == 3  # 100 + 100 + 50


class TestPeerNotDeployed:
    async def test_its_effects_are_not_queued(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: httpx.AsyncClient,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        db = mongo[db_name]
        relay = OutboxRelay(db, http, {"inventory": peer.url, "deviceconnect": None})
        caplog.set_level(logging.WARNING, logger="common.outbox")
        for n in range(2):
            async with transaction(mongo) as session:
                await db.things.insert_one({"_id": n}, session=session)
                await relay.outbox.add(
                    [
                        Effect("deviceconnect", "POST", f"/connect/{n}"),
                        Effect("inventory", "POST", f"/inventory/{n}"),
                        Effect("auditlogs", "POST", f"/audit/{n}"),
                    ],
                    session=session,
                )

        assert [(e["peer"], e["path"]) for e in await relay.outbox.pending()] == [
            ("inventory", "/inventory/0"),
            ("inventory", "/inventory/1"),
        ]
        assert await db.things.count_documents({}) == 2
        assert [r.getMessage() for r in caplog.records] == [
            "outbox: effects for deviceconnect are dropped: it is not deployed (no address)",
            "outbox: effects for auditlogs are dropped: it is not deployed (no address)",
        ]
        assert await relay.deliver_due() == 2
        assert peer.received == [("POST", "/inventory/0", None), ("POST", "/inventory/1", None)]

    async def test_effects_queued_before_are_dropped_at_start(
        self,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        peer: _Peer,
        http: httpx.AsyncClient,
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
        caplog.set_level(logging.WARNING, logger="common.outbox")

        async with relay.running():
            assert await earlier.pending("deviceconnect") == []

            async def delivered() -> bool:
                return await earlier.pending() == []

            await eventually_async(delivered)

        assert [r.getMessage() for r in caplog.records] == [
            "outbox: 2 queued effects for deviceconnect dropped: it is not deployed (no address)"
        ]
        assert peer.received == [("POST", "/inventory/1", None)]
        assert await earlier.pending() == []
        # What a peer refused is kept for inspection.
        assert [d["path"] async for d in db.outbox.find({"state": "dead"})] == ["/refused"]


class _FindCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
