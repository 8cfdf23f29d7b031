"""The outbox's metrics: backlog and oldest effect per peer, deliveries by outcome."""

from __future__ import annotations

import aiohttp
from prometheus_client import generate_latest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from common.core.outbox import Attempt, Effect, Outbox, OutboxRelay, Outcome
from tests.toolkit import Scrape

_PEER = "inventory"


def _scrape() -> Scrape:
    return Scrape(generate_latest().decode())


class TestOutboxMetrics:
    async def test_backlog_and_oldest_effect(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        outbox = Outbox(db, {_PEER})
        # Nothing listens there: every attempt is retried later.
        relay = OutboxRelay(db, http, {_PEER: "http://127.0.0.1:9"})
        await outbox.add([Effect(_PEER, "POST", f"/n/{i}") for i in range(3)])
        await relay.measure()
        page = _scrape()
        assert page.value("fleetport_outbox_backlog", peer=_PEER) == 3
        assert page.value("fleetport_outbox_oldest_age_seconds", peer=_PEER) > 0

        await db.outbox.delete_many({"peer": _PEER})
        await relay.measure()
        page = _scrape()
        assert page.value("fleetport_outbox_backlog", peer=_PEER) == 0
        assert page.value("fleetport_outbox_oldest_age_seconds", peer=_PEER) == 0

    async def test_each_peer_counts_its_own(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        peers = {_PEER: "http://127.0.0.1:9", "auditlogs": "http://127.0.0.1:9"}
        relay = OutboxRelay(db, http, peers)
        await Outbox(db, {"auditlogs"}).add([Effect("auditlogs", "POST", "/events")])
        await Outbox(db, {_PEER}).add([Effect(_PEER, "POST", f"/n/{i}") for i in range(4)])
        await relay.measure()
        page = _scrape()
        assert page.value("fleetport_outbox_backlog", peer=_PEER) == 4
        assert page.value("fleetport_outbox_backlog", peer="auditlogs") == 1
        # The auditlogs effect was written first: its queue's oldest effect is the older.
        assert page.value("fleetport_outbox_oldest_age_seconds", peer="auditlogs") >= page.value(
            "fleetport_outbox_oldest_age_seconds", peer=_PEER
        )

    async def test_lanes_of_a_sender(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]

        async def later(_: object) -> Attempt:
            return Attempt(Outcome.RETRY)

        relay = OutboxRelay(db, http, {}, senders={"hooks": later})
        await Outbox(db, {"hooks"}).add(
            [Effect("hooks", "POST", "/", lane=lane) for lane in ("a", "b", "b")]
        )
        await relay.measure()
        assert _scrape().value("fleetport_outbox_backlog", peer="hooks") == 3

    async def test_deliveries_by_outcome(
        self, mongo: AsyncMongoClient[Document], db_name: str, http: aiohttp.ClientSession
    ) -> None:
        db = mongo[db_name]
        outcomes = iter([Outcome.RETRY, Outcome.DONE, Outcome.REFUSED])

        async def send(_: object) -> Attempt:
            return Attempt(next(outcomes))

        relay = OutboxRelay(db, http, {}, senders={"counted": send}, max_backoff=0.01)
        await Outbox(db, {"counted"}).add(
            [Effect("counted", "POST", "/1", lane="l"), Effect("counted", "POST", "/2", lane="l")]
        )
        deliveries = "fleetport_outbox_deliveries_total"
        before = _scrape()
        assert await relay.deliver_due() == 0  # the first waits for a retry
        # Due again at once.
        await db.outbox.update_many({}, [{"$set": {"next_attempt": "$created_ts"}}])
        assert await relay.deliver_due() == 2
        after = _scrape()
        for outcome in Outcome:
            labels = {"peer": "counted", "outcome": outcome.value}
            assert after.value(deliveries, **labels) == before.value(deliveries, **labels) + 1
