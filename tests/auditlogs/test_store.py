"""The store on the embedded database: every filter is served by an index, in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document, TenantCollection, ensure_indexes
from services.auditlogs.models import AuditLog, LogFilter
from services.auditlogs.store.indexes import INDEXES, LOGS
from services.auditlogs.store.mongo import MongoStore, log_query

T0 = datetime(2026, 2, 1, tzinfo=UTC)
EVENTS = 240


def _log(n: int) -> AuditLog:
    kind = ("device", "deployment", "user")[n % 3]
    obj: dict[str, Any] = {"id": f"obj-{n % 12}", "type": kind}
    if kind == "deployment":
        obj["deployment"] = {"name": f"rollout-{n % 4}"}
    return AuditLog.model_validate(
        {
            "actor": {"id": f"user-{n % 5}", "type": "user", "email": f"u{n % 5}@example.com"},
            "action": "update",
            "object": obj,
            "time": T0 + timedelta(seconds=n),
        }
    )


@pytest.fixture
async def store(mongo_url: str, db_name: str, mongo: AsyncMongoClient[Document]) -> MongoStore:
    """A store with EVENTS events of one tenant, and a few of another."""
    db = mongo[db_name]
    await ensure_indexes(db, INDEXES)
    store = MongoStore(db)
    for n in range(EVENTS):
        await store.insert("", _log(n), event_id=f"e{n}", expire_at=T0 + timedelta(days=1))
        if n % 40 == 0:
            await store.insert("other", _log(n), event_id=f"o{n}", expire_at=T0)
    return store


FILTERS = [
    (LogFilter(), EVENTS),
    (LogFilter(actor_id="user-1"), EVENTS // 5),
    (LogFilter(actor_email="u2@example.com"), EVENTS // 5),
    (LogFilter(object_id="obj-3"), EVENTS // 12),
    (LogFilter(object_type="device"), EVENTS // 3),
    (LogFilter(object_type="device", object_id="obj-3"), EVENTS // 12),
    (LogFilter(object_deployment_name="rollout-1"), EVENTS // 12),
    (LogFilter(since=T0 + timedelta(seconds=200)), EVENTS - 200),
    (LogFilter(until=T0 + timedelta(seconds=30), ascending=True), 30),
]


class TestQueries:
    @pytest.mark.parametrize(("filter_", "matched"), FILTERS)
    async def test_each_filter_uses_an_index(
        self,
        store: MongoStore,
        mongo: AsyncMongoClient[Document],
        db_name: str,
        filter_: LogFilter,
        matched: int,
    ) -> None:
        coll = mongo[db_name][LOGS]
        query = TenantCollection(coll, "").scope(log_query(filter_))
        explain = await coll.find(query).sort([("time", -1), ("_id", -1)]).explain()
        plan = explain["queryPlanner"]["winningPlan"]
        stages = [plan]
        while "inputStage" in stages[-1]:
            stages.append(stages[-1]["inputStage"])
        assert stages[-1]["stage"] == "IXSCAN", plan
        # The index narrows the scan to the matching events. (The counts of the explanation
        # itself are not compared: the embedded server may report a trial run's.)
        assert explain["executionStats"]["totalDocsExamined"] <= matched
        assert await store.count("", filter_) == matched
        assert len(await store.find("", filter_, skip=0, limit=500)) == matched

    async def test_pages_are_ordered_and_disjoint(self, store: MongoStore) -> None:
        newest = LogFilter()
        first = await store.find("", newest, skip=0, limit=100)
        second = await store.find("", newest, skip=100, limit=100)
        times = [log.time for log in first + second]
        assert times == sorted(times, reverse=True)
        assert len(set(times)) == 200

    async def test_streams_in_order_up_to_the_limit(self, store: MongoStore) -> None:
        oldest = LogFilter(ascending=True)
        streamed = [log.time async for log in store.stream("", oldest, limit=150)]
        assert streamed == [T0 + timedelta(seconds=n) for n in range(150)]

    async def test_a_tenant_sees_its_own(self, store: MongoStore) -> None:
        assert await store.count("other", LogFilter()) == EVENTS // 40
        assert await store.delete_tenant("other") == EVENTS // 40
        assert await store.count("", LogFilter()) == EVENTS
