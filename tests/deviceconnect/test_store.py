"""The device connection records: each connection a new version, a device forgotten with
what it last was, and neither with a write that scans the devices."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document
from common.core.outbox import Outbox
from services.deviceconnect.models import ConnectionStatus
from services.deviceconnect.store.mongo import MongoStore
from tests.toolkit.commands import assert_indexed, recording

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _store(mongo: AsyncMongoClient[Document], db_name: str) -> MongoStore:
    db = mongo[db_name]
    return MongoStore(mongo, db, outbox=Outbox(db, ()))


class TestConnections:
    async def test_each_connection_is_a_new_version(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        store = _store(mongo, db_name)
        await store.provision_devices("t", ["d1"], now=_NOW)
        with recording(db_name) as recorder:
            version, previous = await store.set_connected("t", "d1", instance="i1", now=_NOW)
        assert version == 1
        assert previous is not None
        assert previous.status is ConnectionStatus.DISCONNECTED
        assert recorder.names == ["find", "update"]
        await assert_indexed(mongo, db_name, recorder)

        assert await store.set_disconnected("t", "d1", version=1, now=_NOW)
        version, previous = await store.set_connected("t", "d1", instance="i2", now=_NOW)
        assert version == 2
        assert previous is not None
        assert (previous.status, previous.instance) == (ConnectionStatus.DISCONNECTED, "i1")
        # The connection of version 1 is over: its late disconnection changes nothing.
        assert not await store.set_disconnected("t", "d1", version=1, now=_NOW)
        device = await store.get_device("t", "d1")
        assert device is not None
        assert (device.status, device.version, device.instance) == (
            ConnectionStatus.CONNECTED,
            2,
            "i2",
        )

    async def test_concurrent_connections_get_distinct_versions(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        store = _store(mongo, db_name)
        results = await asyncio.gather(
            *(store.set_connected("t", "d1", instance=f"i{n}", now=_NOW) for n in range(8))
        )
        assert sorted(version for version, _ in results) == list(range(1, 9))
        # Each connection saw the one before it, and exactly one saw no device.
        assert sorted(p.version if p else 0 for _, p in results) == list(range(8))
        device = await store.get_device("t", "d1")
        assert device is not None
        assert device.version == 8

    async def test_a_device_of_another_tenant_is_untouched(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        store = _store(mongo, db_name)
        await store.set_connected("t1", "d1", instance="i1", now=_NOW)
        assert await store.delete_device("t2", "d1") is None
        with pytest.raises(DuplicateKeyError):
            await store.set_connected("t2", "d1", instance="i2", now=_NOW)
        assert await store.get_device("t2", "d1") is None
        device = await store.get_device("t1", "d1")
        assert device is not None
        assert (device.version, device.instance) == (1, "i1")


class TestForget:
    async def test_returns_what_was_stored(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        store = _store(mongo, db_name)
        await store.set_connected("t", "d1", instance="i1", now=_NOW)
        with recording(db_name) as recorder:
            forgotten = await store.delete_device("t", "d1")
        assert forgotten is not None
        assert (forgotten.status, forgotten.version) == (ConnectionStatus.CONNECTED, 1)
        assert recorder.names == ["find", "delete"]
        await assert_indexed(mongo, db_name, recorder)
        assert await store.get_device("t", "d1") is None
        assert await store.delete_device("t", "d1") is None

    async def test_races_a_connection(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        store = _store(mongo, db_name)
        await store.set_connected("t", "d1", instance="i1", now=_NOW)
        forgotten, (version, previous) = await asyncio.gather(
            store.delete_device("t", "d1"),
            store.set_connected("t", "d1", instance="i2", now=_NOW),
        )
        stored = await store.get_device("t", "d1")
        assert forgotten is not None
        if stored is None:
            # The connection came first: the device was forgotten as it left it.
            assert (forgotten.version, forgotten.instance) == (2, "i2")
            assert version == 2
        else:
            # The device was forgotten first, and the connection recorded it anew.
            assert (forgotten.version, forgotten.instance) == (1, "i1")
            assert (version, previous) == (1, None)
            assert stored.instance == "i2"
