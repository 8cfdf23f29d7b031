"""The store on the real database: revisions, id clashes, tenants, and an index per query."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document, create_client, ensure_indexes
from common.core.outbox import Outbox
from services.deviceconfig.models import DeviceConfiguration
from services.deviceconfig.store import DeviceIdTaken
from services.deviceconfig.store.indexes import INDEXES
from services.deviceconfig.store.mongo import MongoStore
from tests.deviceconfig.conftest import (
    DEVICE_API,
    INTERNAL,
    MANAGEMENT,
    CommandRecorder,
    device_headers,
    user_headers,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(mongo_url: str, db_name: str) -> AsyncIterator[MongoStore]:
    """A store on a fresh database with its indexes."""
    client = create_client(mongo_url)
    try:
        await ensure_indexes(client[db_name], INDEXES)
        db = client[db_name]
        yield MongoStore(client, db, outbox=Outbox(db, {"auditlogs"}))
    finally:
        await client.close()


class TestRevisions:
    async def test_merge_only_at_the_revision_it_read(self, store: MongoStore) -> None:
        await store.insert_device("", DeviceConfiguration(id="d1", updated_ts=NOW))
        await store.replace_configured("", "d1", {"a": "1"}, now=NOW)
        device = await store.get_device("", "d1")
        assert device is not None
        assert (device.configured, device.revision) == ({"a": "1"}, 1)

        assert await store.update_configured("", "d1", {"a": "2"}, now=NOW, revision=0) is False
        assert await store.update_configured("", "d1", {"a": "3"}, now=NOW, revision=1) is True
        device = await store.get_device("", "d1")
        assert device is not None
        assert (device.configured, device.revision) == ({"a": "3"}, 2)

    async def test_reports_leave_the_revision(self, store: MongoStore) -> None:
        await store.replace_reported("", "d1", {"r": "1"}, now=NOW)
        device = await store.get_device("", "d1")
        assert device is not None
        assert (device.reported, device.configured, device.revision) == ({"r": "1"}, {}, 0)
        assert device.updated_ts == device.reported_ts == NOW


class TestIds:
    async def test_inserting_twice(self, store: MongoStore) -> None:
        await store.insert_device("t1", DeviceConfiguration(id="d1", updated_ts=NOW))
        with pytest.raises(DeviceIdTaken):
            await store.insert_device("t1", DeviceConfiguration(id="d1", updated_ts=NOW))

    async def test_another_tenants_id(self, store: MongoStore) -> None:
        await store.insert_device(
            "t1", DeviceConfiguration(id="d1", configured={"a": "b"}, updated_ts=NOW)
        )
        with pytest.raises(DeviceIdTaken):
            await store.replace_configured("t2", "d1", {"x": "y"}, now=NOW)
        with pytest.raises(DeviceIdTaken):
            await store.replace_reported("t2", "d1", {"x": "y"}, now=NOW)
        assert await store.get_device("t2", "d1") is None
        device = await store.get_device("t1", "d1")
        assert device is not None
        assert (device.configured, device.reported) == ({"a": "b"}, {})
        assert await store.set_deployment_id("t2", "d1", "dep") is False
        assert await store.delete_device("t2", "d1") is False
        assert await store.delete_tenant("t2") == 0
        assert await store.get_device("t1", "d1") == device


class TestIndexes:
    async def test_every_query_uses_an_index(
        self,
        client: httpx.AsyncClient,
        recorder: CommandRecorder,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id = str(uuid.uuid4())
        calls = [
            client.post(f"{INTERNAL}/tenants/t1/devices", json={"device_id": device_id}),
            client.put(f"{MANAGEMENT}/{device_id}", json={"a": "b"}, headers=user_headers("t1")),
            client.patch(f"{INTERNAL}/tenants/t1/configurations/device/{device_id}", json={}),
            client.put(DEVICE_API, json={"a": "b"}, headers=device_headers(device_id, "t1")),
            client.get(DEVICE_API, headers=device_headers(device_id, "t1")),
            client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers("t1")),
            client.post(f"{MANAGEMENT}/{device_id}/deploy", json={}, headers=user_headers("t1")),
            client.delete(f"{INTERNAL}/tenants/t1/devices/{device_id}"),
            client.delete(f"{INTERNAL}/tenants/t1"),
        ]
        for call in calls:
            assert (await call).status_code < 300
        assert {collection for collection, _ in recorder.filters} == {"devices"}
        assert len(recorder.filters) >= len(calls)
        for collection, filter_ in recorder.filters:
            plan = await mongo[db_name].command(
                {"explain": {"find": collection, "filter": filter_}, "verbosity": "queryPlanner"}
            )
            winning = str(plan["queryPlanner"]["winningPlan"])
            assert "IXSCAN" in winning or "IDHACK" in winning, f"{filter_}: {winning}"
            assert "COLLSCAN" not in winning, f"{filter_} scans the collection"
