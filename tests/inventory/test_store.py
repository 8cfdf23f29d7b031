"""The Mongo store against the real database: conditional writes, keywords, statuses, indexes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from common.core.errors import Conflict
from common.core.mongo import Document, TenantCollection, ensure_indexes
from services.inventory.models import (
    Attribute,
    AttributeRef,
    Device,
    DeviceChange,
    DeviceQuery,
    Operator,
    Predicate,
    Regex,
    WriteOutcome,
)
from services.inventory.store.indexes import INDEXED_PATHS, INDEXES, index_name
from services.inventory.store.mongo import MongoStore, search_filter
from tests.toolkit.commands import CommandRecorder, assert_indexed, recording

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _attr(scope: str, name: str, value: object) -> Attribute:
    return Attribute(name=name, scope=scope, value=value)


@pytest.fixture
async def db(mongo: AsyncMongoClient[Document], db_name: str) -> AsyncDatabase[Document]:
    database = mongo[db_name]
    await ensure_indexes(database, INDEXES)
    return database


@pytest.fixture
def store(db: AsyncDatabase[Document]) -> MongoStore:
    return MongoStore(db)


class TestWriteDevice:
    async def test_keywords_follow_the_attributes(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        change = DeviceChange(
            now=NOW,
            set=(
                _attr("inventory", "host", "Edge-Box.local"),
                _attr("inventory", "cpus", 4.0),
                _attr("inventory", "names", ["alpha", "beta"]),
                _attr("monitor", "note", "quiet"),
                _attr("identity", "mac", "AA:BB"),
            ),
        )
        assert await store.write_device("", "Dev-1", change) is WriteOutcome.OK
        doc = await db["devices"].find_one({"_id": "Dev-1"})
        assert doc is not None
        # Strings of identity, inventory and tags; not numbers, arrays or other scopes.
        assert sorted(doc["text"]) == ["1", "aa", "bb", "box", "dev", "edge", "local"]

        replace = DeviceChange(
            now=NOW,
            set=(_attr("inventory", "os", "Linux"),),
            replace_scopes=frozenset({"inventory"}),
        )
        assert await store.write_device("", "Dev-1", replace) is WriteOutcome.OK
        doc = await db["devices"].find_one({"_id": "Dev-1"})
        assert doc is not None
        assert sorted(doc["text"]) == ["1", "aa", "bb", "dev", "linux"]
        assert set(doc["attributes"]) == {
            "inventory-os",
            "monitor-note",
            "identity-mac",
            "system-created_ts",
        }
        assert doc["created_ts"] == NOW

    async def test_created_ts_is_kept(self, store: MongoStore) -> None:
        await store.write_device("", "d1", DeviceChange(now=NOW))
        later = NOW + timedelta(days=1)
        await store.write_device("", "d1", DeviceChange(now=later, touch_updated=True))
        device = await store.get_device("", "d1")
        assert device is not None
        values = {(a.scope, a.name): a.value for a in device.attributes}
        assert values[("system", "created_ts")] == NOW
        assert values[("system", "updated_ts")] == later
        assert device.updated_ts == later

    async def test_not_found_without_create(self, store: MongoStore) -> None:
        change = DeviceChange(now=NOW, set=(_attr("tags", "t", "v"),), create=False)
        assert await store.write_device("", "nope", change) is WriteOutcome.NOT_FOUND
        assert await store.get_device("", "nope") is None

    async def test_tags_etag(self, store: MongoStore) -> None:
        await store.write_device("", "d1", DeviceChange(now=NOW))
        first = DeviceChange(
            now=NOW, set=(_attr("tags", "t", "1"),), create=False, new_tags_etag="e1"
        )
        assert await store.write_device("", "d1", first) is WriteOutcome.OK

        stale = DeviceChange(
            now=NOW,
            set=(_attr("tags", "t", "2"),),
            create=False,
            if_tags_etag="e0",
            new_tags_etag="e2",
        )
        assert await store.write_device("", "d1", stale) is WriteOutcome.ETAG_MISMATCH
        current = DeviceChange(
            now=NOW,
            set=(_attr("tags", "t", "3"),),
            create=False,
            if_tags_etag="e1",
            new_tags_etag="e3",
        )
        assert await store.write_device("", "d1", current) is WriteOutcome.OK
        device = await store.get_device("", "d1")
        assert device is not None
        assert device.tags_etag == "e3"

    async def test_limit_counts_stored_attributes(self, store: MongoStore) -> None:
        limits = {"inventory": 3}
        two = DeviceChange(
            now=NOW, set=(_attr("inventory", "a", "1"), _attr("inventory", "b", "1")), limits=limits
        )
        assert await store.write_device("", "d1", two) is WriteOutcome.OK
        more = DeviceChange(
            now=NOW, set=(_attr("inventory", "c", "1"), _attr("inventory", "d", "1")), limits=limits
        )
        assert await store.write_device("", "d1", more) is WriteOutcome.LIMIT_EXCEEDED
        overwrite = DeviceChange(
            now=NOW, set=(_attr("inventory", "a", "2"), _attr("inventory", "c", "1")), limits=limits
        )
        assert await store.write_device("", "d1", overwrite) is WriteOutcome.OK
        # A new device is checked up front, without a round trip.
        four = DeviceChange(
            now=NOW, set=tuple(_attr("inventory", f"x{i}", "1") for i in range(4)), limits=limits
        )
        assert await store.write_device("", "d2", four) is WriteOutcome.LIMIT_EXCEEDED
        assert await store.get_device("", "d2") is None

    async def test_if_unmodified_since(self, store: MongoStore) -> None:
        await store.write_device("", "d1", DeviceChange(now=NOW, touch_updated=True))
        before = DeviceChange(
            now=NOW,
            set=(_attr("identity", "a", "1"),),
            if_unmodified_since=NOW - timedelta(seconds=1),
        )
        assert await store.write_device("", "d1", before) is WriteOutcome.PRECONDITION_FAILED
        at = DeviceChange(now=NOW, set=(_attr("identity", "a", "1"),), if_unmodified_since=NOW)
        assert await store.write_device("", "d1", at) is WriteOutcome.OK

    async def test_remove(self, store: MongoStore, db: AsyncDatabase[Document]) -> None:
        await store.write_device(
            "", "d1", DeviceChange(now=NOW, set=(_attr("system", "group", "Blue"),))
        )
        doc = await db["devices"].find_one({"_id": "d1"})
        assert doc is not None
        assert "blue" in doc["text"]
        change = DeviceChange(now=NOW, remove=(AttributeRef("system", "group"),), create=False)
        assert await store.write_device("", "d1", change) is WriteOutcome.OK
        doc = await db["devices"].find_one({"_id": "d1"})
        assert doc is not None
        assert "system-group" not in doc["attributes"]
        assert "blue" not in doc["text"]

    async def test_another_tenants_device_is_never_overwritten(self, store: MongoStore) -> None:
        await store.write_device(
            "a", "same-id", DeviceChange(now=NOW, set=(_attr("inventory", "o", "a"),))
        )
        change = DeviceChange(now=NOW, set=(_attr("inventory", "o", "b"),))
        with pytest.raises(Conflict):
            await store.write_device("b", "same-id", change)
        device = await store.get_device("a", "same-id")
        assert device is not None
        assert device.attributes[0].value == "a"
        assert await store.get_device("b", "same-id") is None


class _Writes(monitoring.CommandListener):
    """Counts the write commands of a client that changed a document."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name in ("update", "insert", "delete", "findAndModify"):
            self.count += event.reply.get("n", 0) > 0

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class TestUnchangedReports:
    """A device's whole report that is the stored one writes nothing until refresh time."""

    @pytest.fixture
    async def watched(
        self, mongo_url: str, db: AsyncDatabase[Document]
    ) -> AsyncIterator[tuple[MongoStore, _Writes]]:
        writes = _Writes()
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            mongo_url, tz_aware=True, event_listeners=[writes]
        )
        try:
            yield MongoStore(client[db.name]), writes
        finally:
            await client.close()

    @staticmethod
    def _report(now: datetime, digest: str, *attrs: Attribute) -> DeviceChange:
        return DeviceChange(
            now=now,
            set=attrs,
            replace_scopes=frozenset({"inventory"}),
            touch_updated=True,
            report_digest=digest,
            skip_if_updated_after=now - timedelta(hours=1),
        )

    async def test_the_same_report_writes_nothing_until_the_refresh(
        self, watched: tuple[MongoStore, _Writes], db: AsyncDatabase[Document]
    ) -> None:
        store, writes = watched
        os_ = _attr("inventory", "os", "Linux")
        assert await store.write_device("", "d1", self._report(NOW, "a", os_)) is WriteOutcome.OK
        assert writes.count == 1

        later = NOW + timedelta(minutes=59)
        assert await store.write_device("", "d1", self._report(later, "a", os_)) is WriteOutcome.OK
        assert writes.count == 1
        doc = await db["devices"].find_one({"_id": "d1"})
        assert doc is not None
        assert doc["updated_ts"] == NOW
        assert doc["report_digest"] == "a"

        # Past the refresh period the same report is written, to refresh `updated_ts`.
        refresh = NOW + timedelta(minutes=61)
        assert (
            await store.write_device("", "d1", self._report(refresh, "a", os_)) is WriteOutcome.OK
        )
        assert writes.count == 2
        device = await store.get_device("", "d1")
        assert device is not None
        assert device.updated_ts == refresh

    async def test_a_different_report_is_written(self, watched: tuple[MongoStore, _Writes]) -> None:
        store, writes = watched
        await store.write_device("", "d1", self._report(NOW, "a", _attr("inventory", "os", "A")))
        changed = self._report(NOW, "b", _attr("inventory", "os", "B"))
        assert await store.write_device("", "d1", changed) is WriteOutcome.OK
        assert writes.count == 2
        device = await store.get_device("", "d1")
        assert device is not None
        assert [a.value for a in device.attributes if a.name == "os"] == ["B"]

    async def test_other_changes_to_the_inventory_scope_forget_the_digest(
        self, watched: tuple[MongoStore, _Writes], db: AsyncDatabase[Document]
    ) -> None:
        store, writes = watched
        os_ = _attr("inventory", "os", "Linux")
        await store.write_device("", "d1", self._report(NOW, "a", os_))
        # Another scope leaves it.
        peer = DeviceChange(now=NOW, set=(_attr("identity", "mac", "aa"),))
        await store.write_device("", "d1", peer)
        assert await db["devices"].count_documents({"report_digest": "a"}) == 1
        # A merge into the inventory scope (a device's PATCH) forgets it, so the next whole
        # report replaces the merged attribute.
        merge = DeviceChange(now=NOW, set=(_attr("inventory", "extra", "1"),))
        await store.write_device("", "d1", merge)
        assert await db["devices"].count_documents({"report_digest": {"$exists": True}}) == 0
        before = writes.count
        await store.write_device("", "d1", self._report(NOW, "a", os_))
        assert writes.count == before + 1
        device = await store.get_device("", "d1")
        assert device is not None
        inventory = sorted(a.name for a in device.attributes if a.scope == "inventory")
        assert inventory == ["os"]

    async def test_a_deleted_device_is_created_again(
        self, watched: tuple[MongoStore, _Writes]
    ) -> None:
        store, _ = watched
        os_ = _attr("inventory", "os", "Linux")
        await store.write_device("", "d1", self._report(NOW, "a", os_))
        assert await store.delete_devices("", ["d1"]) == 1
        assert await store.write_device("", "d1", self._report(NOW, "a", os_)) is WriteOutcome.OK
        assert await store.get_device("", "d1") is not None


class TestSetStatuses:
    async def test_revision_order(self, store: MongoStore) -> None:
        result = await store.set_statuses(
            "", status="pending", devices=[("d1", 2), ("d2", 1)], now=NOW
        )
        assert (result.matched_count, result.created_count) == (0, 2)

        result = await store.set_statuses(
            "", status="accepted", devices=[("d1", 1), ("d2", 2)], now=NOW
        )
        assert (result.matched_count, result.created_count) == (1, 0)
        for device_id, status, revision in (("d1", "pending", 2), ("d2", "accepted", 2)):
            device = await store.get_device("", device_id)
            assert device is not None
            assert device.revision == revision
            assert [a.value for a in device.attributes if a.name == "status"] == [status]

    async def test_check_ins_come_with_statuses(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        def check_in(device: Device | None) -> object:
            assert device is not None
            return next(a.value for a in device.attributes if a.name == "check_in_time")

        later = NOW + timedelta(hours=1)
        # Created with both; then a newer status with an older check-in keeps the stored one.
        await store.set_statuses(
            "", status="pending", devices=[("d1", 1)], now=NOW, check_ins={"d1": later}
        )
        await store.set_statuses(
            "", status="accepted", devices=[("d1", 2)], now=NOW, check_ins={"d1": NOW}
        )
        device = await store.get_device("", "d1")
        assert check_in(device) == later
        assert device is not None
        assert device.revision == 2
        # A stale status still brings a later check-in, and leaves the status alone.
        latest = later + timedelta(hours=1)
        with recording(db_name) as recorded:
            result = await store.set_statuses(
                "", status="rejected", devices=[("d1", 1)], now=NOW, check_ins={"d1": latest}
            )
        assert result.matched_count == 1
        device = await store.get_device("", "d1")
        assert check_in(device) == latest
        assert device is not None
        assert device.revision == 2
        assert [a.value for a in device.attributes if a.name == "status"] == ["accepted"]
        assert recorded.names == ["find", "update"]
        await assert_indexed(mongo, db_name, recorded)
        # The same again: nothing to write.
        with recording(db_name) as recorded:
            await store.set_statuses(
                "", status="rejected", devices=[("d1", 1)], now=NOW, check_ins={"d1": latest}
            )
        assert recorded.names == ["find"]


def _expected_keywords(doc: Document) -> list[str]:
    """The keywords of a stored device, worked out from its attributes independently."""
    values = [doc["_id"]]
    for key, raw in doc["attributes"].items():
        if isinstance(raw["value"], str) and (
            raw["scope"] in ("identity", "inventory", "tags") or key == "system-group"
        ):
            values.append(raw["value"])
    return sorted({token.lower() for v in values for token in re.findall("[A-Za-z0-9]+", v)})


async def _text(db: AsyncDatabase[Document], device_id: str, tenant: str = "") -> list[str]:
    """The stored keywords of a device, checked against its stored attributes."""
    doc = await db["devices"].find_one({"_id": device_id, "tenant_id": tenant})
    assert doc is not None
    assert sorted(doc["text"]) == _expected_keywords(doc)
    return sorted(doc["text"])


class TestKeywords:
    """After every kind of write, `text` holds exactly the keywords of the stored attributes."""

    async def test_a_status_change_replaces_the_old_status(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        await store.write_device(
            "", "d1", DeviceChange(now=NOW, set=(_attr("identity", "mac", "M1"),))
        )
        await store.set_statuses("", status="pending", devices=[("d1", 1)], now=NOW)
        assert await _text(db, "d1") == ["d1", "m1", "pending"]
        await store.set_statuses("", status="accepted", devices=[("d1", 2)], now=NOW)
        assert await _text(db, "d1") == ["accepted", "d1", "m1"]
        # A new device created by its status alone.
        await store.set_statuses("", status="preauthorized", devices=[("d2", 1)], now=NOW)
        assert await _text(db, "d2") == ["d2", "preauthorized"]

    async def test_removing_an_attribute_drops_its_tokens_but_not_shared_ones(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        both = DeviceChange(
            now=NOW,
            set=(
                _attr("inventory", "os", "Yocto Linux"),
                _attr("identity", "kernel", "linux-6"),
                _attr("tags", "site", "Rack 7"),
            ),
        )
        await store.write_device("", "d1", both)
        assert await _text(db, "d1") == ["6", "7", "d1", "linux", "rack", "yocto"]
        remove_os = DeviceChange(now=NOW, remove=(AttributeRef("inventory", "os"),), create=False)
        assert await store.write_device("", "d1", remove_os) is WriteOutcome.OK
        # `linux` is the kernel's too.
        assert await _text(db, "d1") == ["6", "7", "d1", "linux", "rack"]
        replace_tags = DeviceChange(
            now=NOW,
            set=(_attr("tags", "owner", "Ops"),),
            replace_scopes=frozenset({"tags"}),
            create=False,
        )
        assert await store.write_device("", "d1", replace_tags) is WriteOutcome.OK
        assert await _text(db, "d1") == ["6", "d1", "linux", "ops"]
        overwrite = DeviceChange(now=NOW, set=(_attr("identity", "kernel", 6.0),), create=False)
        assert await store.write_device("", "d1", overwrite) is WriteOutcome.OK
        assert await _text(db, "d1") == ["d1", "ops"]

    async def test_group_set_and_unset(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        await store.write_device("", "d1", DeviceChange(now=NOW, set=(_attr("tags", "t", "blue"),)))
        await store.write_device("", "d2", DeviceChange(now=NOW))
        assign = DeviceChange(now=NOW, set=(_attr("system", "group", "Red"),), create=False)
        assert await store.write_device("", "d1", assign) is WriteOutcome.OK
        assert await _text(db, "d1") == ["blue", "d1", "red"]
        await store.set_group("", device_ids=["d1", "d2"], group="Blue")
        assert await _text(db, "d1") == ["blue", "d1"]
        assert await _text(db, "d2") == ["blue", "d2"]
        await store.unset_group("", group="Blue", device_ids=["d1"])
        # The tag keeps `blue` for d1.
        assert await _text(db, "d1") == ["blue", "d1"]
        await store.unset_group("", group="Blue")
        assert await _text(db, "d2") == ["d2"]
        # And a status change after it keeps the keywords right.
        await store.set_statuses("", status="accepted", devices=[("d1", 1)], now=NOW)
        assert await _text(db, "d1") == ["accepted", "blue", "d1"]


class TestConcurrentWriters:
    """Writes computed from the same read of a device: the later one reads again, so both
    changes are stored, and the keywords of both."""

    async def test_two_peers_write_one_device(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        for n in range(10):
            device_id = f"d{n}"
            await store.write_device("", device_id, DeviceChange(now=NOW))
            first = DeviceChange(now=NOW, set=(_attr("identity", "mac", f"Mac{n}"),))
            second = DeviceChange(
                now=NOW, set=(_attr("inventory", "os", f"Os{n}"),), touch_updated=True
            )
            outcomes = await asyncio.gather(
                store.write_device("", device_id, first), store.write_device("", device_id, second)
            )
            assert list(outcomes) == [WriteOutcome.OK, WriteOutcome.OK]
            device = await store.get_device("", device_id)
            assert device is not None
            values = {(a.scope, a.name): a.value for a in device.attributes}
            assert values[("identity", "mac")] == f"Mac{n}"
            assert values[("inventory", "os")] == f"Os{n}"
            assert await _text(db, device_id) == [device_id, f"mac{n}", f"os{n}"]

    async def test_a_status_list_and_a_peer_write(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        ids = [f"d{n}" for n in range(20)]
        await store.set_statuses("", status="pending", devices=[(d, 1) for d in ids], now=NOW)
        writes = [
            store.write_device(
                "", d, DeviceChange(now=NOW, set=(_attr("identity", "sn", f"Sn{d}"),))
            )
            for d in ids
        ]
        statuses = store.set_statuses("", status="accepted", devices=[(d, 2) for d in ids], now=NOW)
        result, outcomes = await asyncio.gather(statuses, asyncio.gather(*writes))
        assert outcomes == [WriteOutcome.OK] * len(ids)
        assert (result.matched_count, result.created_count) == (len(ids), 0)
        for d in ids:
            assert await _text(db, d) == ["accepted", d, f"sn{d}"]

    async def test_concurrent_creation(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        changes = [
            DeviceChange(now=NOW, set=(_attr("identity", f"a{n}", f"V{n}"),)) for n in range(2)
        ]
        outcomes = await asyncio.gather(*(store.write_device("", "new", c) for c in changes))
        assert outcomes == [WriteOutcome.OK] * 2
        assert await _text(db, "new") == ["new", "v0", "v1"]

    async def test_another_tenants_id_in_a_status_list(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        await store.write_device("a", "same-id", DeviceChange(now=NOW))
        result = await store.set_statuses(
            "b", status="accepted", devices=[("same-id", 1), ("mine", 1)], now=NOW
        )
        assert (result.matched_count, result.created_count) == (0, 1)
        assert await _text(db, "same-id", "a") == ["id", "same"]
        assert await _text(db, "mine", "b") == ["accepted", "mine"]


class TestSearchFilter:
    def test_conditions_stay_flat(self) -> None:
        n = AttributeRef("inventory", "n")
        query = DeviceQuery(
            predicates=(
                Predicate(n, "$gt", 1.0),
                Predicate(n, "$lt", 5.0),
                Predicate(n, "$gt", 2.0),
                Predicate(AttributeRef("identity", "id"), "$in", ["a"]),
                Predicate(AttributeRef("inventory", "h.x"), "$regex", Regex("^a", "i")),
            ),
            text_tokens=("one", "two"),
        )
        assert search_filter(query) == {
            "attributes.inventory-n.value": {"$gt": 1.0, "$lt": 5.0},
            "_id": {"$in": ["a"]},
            "attributes.inventory-h\uff0ex.value": {"$regex": "^a", "$options": "i"},
            "text": {"$all": ["one", "two"]},
            "$and": [{"attributes.inventory-n.value": {"$gt": 2.0}}],
        }

    def test_single_keyword_is_an_equality(self) -> None:
        assert search_filter(DeviceQuery(text_tokens=("one",))) == {"text": "one"}
        assert search_filter(DeviceQuery(text_tokens=())) == {"_id": {"$in": []}}


class TestIndexes:
    """Every indexed path serves its equality searches from the index at a realistic size."""

    DEVICES = 20_000
    STATUSES = ("accepted", "pending", "rejected", "preauthorized", "noauth")

    async def test_equality_searches_scan_the_index(
        self, store: MongoStore, db: AsyncDatabase[Document]
    ) -> None:
        coll = db["devices"]
        for start in range(0, self.DEVICES, 5000):
            await coll.insert_many(
                [self._device(i) for i in range(start, start + 5000)], ordered=False
            )
        # Another tenant's devices are never examined.
        await coll.insert_many(
            [{**self._device(i), "_id": f"x{i}", "tenant_id": "t2"} for i in range(50)]
        )

        cases: list[tuple[AttributeRef, Operator, object, int]] = [
            (AttributeRef("identity", "id"), "$eq", "dev-00042", 1),
            (AttributeRef("identity", "status"), "$eq", "noauth", 40),
            (AttributeRef("identity", "mac"), "$eq", "02:00:00:00:30:39", 1),
            (AttributeRef("inventory", "device_type"), "$eq", "type-7", 200),
            (AttributeRef("system", "group"), "$in", ["group-3", "group-5"], 80),
            (
                AttributeRef("system", "updated_ts"),
                "$gte",
                datetime(2025, 1, 1, 5, 32, 40, tzinfo=UTC),
                40,
            ),
        ]
        for ref, op, value, matched in cases:
            query = DeviceQuery(predicates=(Predicate(ref, op, value),), limit=500)
            await self._assert_index_scan(db, query, matched)
            devices, total = await store.search("", query)
            assert total == matched
            assert len(devices) == min(matched, 500)

        text = DeviceQuery(text_tokens=("rack7",), limit=500)
        await self._assert_index_scan(db, text, 200)

    async def _assert_index_scan(
        self, db: AsyncDatabase[Document], query: DeviceQuery, matched: int
    ) -> None:
        filter_ = TenantCollection(db["devices"], "").scope(search_filter(query))
        explain = await db["devices"].find(filter_).explain()
        plan = explain["queryPlanner"]["winningPlan"]
        stages = [plan, plan.get("inputStage") or {}]
        ixscan = [s for s in stages if s.get("stage") == "IXSCAN"]
        assert ixscan, f"{filter_} did not use an index: {plan}"
        (path,) = (p for p in INDEXED_PATHS if p in filter_)
        assert ixscan[0]["indexName"] in (index_name(path), "_id_")
        stats = explain["executionStats"]
        assert stats["nReturned"] == matched
        assert stats["totalDocsExamined"] <= matched

    def _device(self, i: int) -> Document:
        status = "noauth" if i % 500 == 0 else self.STATUSES[i % 4]
        attributes: Document = {
            "identity-status": {"name": "status", "scope": "identity", "value": status},
            "identity-mac": {
                "name": "mac",
                "scope": "identity",
                "value": f"02:00:00:00:{i // 256 % 256:02x}:{i % 256:02x}",
            },
            "inventory-device_type": {
                "name": "device_type",
                "scope": "inventory",
                "value": f"type-{i % 100}",
            },
            "system-updated_ts": {
                "name": "updated_ts",
                "scope": "system",
                "value": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
            },
        }
        if i % 10 == 0:
            attributes["system-group"] = {
                "name": "group",
                "scope": "system",
                "value": f"group-{i // 10 % 50}",
            }
        return {
            "_id": f"dev-{i:05d}",
            "tenant_id": "",
            "attributes": attributes,
            "revision": 1,
            "text": ["dev", f"{i:05d}", f"rack{i % 100}"],
        }


def _plain_updates(recorded: CommandRecorder) -> None:
    """Every recorded update sets values (update operators), never a pipeline to evaluate."""
    updates = [u for name, c in recorded.commands if name == "update" for u in c["updates"]]
    assert updates
    for statement in updates:
        assert isinstance(statement["u"], dict), statement["u"]
        assert set(statement["u"]) <= {"$set", "$unset"}
        assert "version" in statement["q"]


class TestWriteCost:
    """What the hot writes send the database: few commands, each looking the device up by key,
    and updates that set the values computed from the device read (keywords included)."""

    @staticmethod
    async def _seed(store: MongoStore, *device_ids: str) -> None:
        for device_id in device_ids:
            change = DeviceChange(now=NOW, set=(_attr("identity", "mac", f"{device_id}-mac"),))
            assert await store.write_device("t1", device_id, change) is WriteOutcome.OK

    async def test_identity_from_deviceauth(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        await self._seed(store, "d1")
        change = DeviceChange(
            now=NOW,
            set=(_attr("identity", "mac", "AA:BB"), _attr("identity", "sn", "42")),
            limits={"identity": 100},
        )
        with recording(db_name) as recorded:
            assert await store.write_device("t1", "d1", change) is WriteOutcome.OK
        # The device with its scope sizes, then the write if it is still the one read: no
        # limit guard in the filter, which would make the database scan every device.
        assert recorded.names == ["find", "update"]
        await assert_indexed(mongo, db_name, recorded)
        _plain_updates(recorded)
        device = await store.get_device("t1", "d1")
        assert device is not None
        assert {a.name: a.value for a in device.attributes if a.scope == "identity"} == {
            "mac": "AA:BB",
            "sn": "42",
        }

    async def test_device_report_and_unchanged_report(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        await self._seed(store, "d1")
        report = DeviceChange(
            now=NOW,
            set=(_attr("inventory", "os", "linux"),),
            replace_scopes=frozenset({"inventory"}),
            limits={"inventory": 100},
            touch_updated=True,
            report_digest="digest-1",
            skip_if_updated_after=NOW - timedelta(hours=1),
        )
        with recording(db_name) as recorded:
            assert await store.write_device("t1", "d1", report) is WriteOutcome.OK
        assert recorded.names == ["find", "update"]
        await assert_indexed(mongo, db_name, recorded)
        _plain_updates(recorded)
        with recording(db_name) as recorded:
            assert await store.write_device("t1", "d1", report) is WriteOutcome.OK
        assert recorded.names == ["find"]
        await assert_indexed(mongo, db_name, recorded)

    async def test_if_unmodified_since(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        await self._seed(store, "d1")
        change = DeviceChange(
            now=NOW, set=(_attr("system", "x", "1"),), if_unmodified_since=NOW + timedelta(1)
        )
        with recording(db_name) as recorded:
            assert await store.write_device("t1", "d1", change) is WriteOutcome.OK
        assert recorded.names == ["find", "update"]
        await assert_indexed(mongo, db_name, recorded)
        _plain_updates(recorded)

    async def test_unconditional_write_and_creation(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        await self._seed(store, "d1")
        change = DeviceChange(now=NOW, set=(_attr("monitor", "alerts", True),))
        with recording(db_name) as recorded:
            assert await store.write_device("t1", "d1", change) is WriteOutcome.OK
        assert recorded.names == ["find", "update"]
        await assert_indexed(mongo, db_name, recorded)
        _plain_updates(recorded)
        with recording(db_name) as recorded:
            assert await store.write_device("t1", "d2", change) is WriteOutcome.OK
        assert recorded.names == ["find", "insert"]
        await assert_indexed(mongo, db_name, recorded)

    async def test_status_list(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        await self._seed(store, "d1", "d2")
        with recording(db_name) as recorded:
            result = await store.set_statuses(
                "t1", status="accepted", devices=[("d1", 2), ("d2", 3), ("d3", 1)], now=NOW
            )
        # One read of the whole list by key (an `$in` on `_id`, served by the index), then one
        # bulk write: the new device inserted, the others each updated by its key.
        assert recorded.names == ["find", "insert", "update"]
        (_, find), *_ = recorded.commands
        assert find["filter"]["_id"] == {"$in": ["d1", "d2", "d3"]}
        await assert_indexed(mongo, db_name, recorded)
        _plain_updates(recorded)
        assert (result.matched_count, result.created_count) == (2, 1)

        with recording(db_name) as recorded:
            result = await store.set_statuses(
                "t1", status="pending", devices=[("d1", 4), ("d2", 3), ("d3", 4)], now=NOW
            )
        # Known devices only: one read, one update command; d2 is as new already.
        assert recorded.names == ["find", "update"]
        assert len(recorded.commands[1][1]["updates"]) == 2
        await assert_indexed(mongo, db_name, recorded)
        assert (result.matched_count, result.created_count) == (2, 0)

    async def test_concurrent_writes_keep_the_limit(self, store: MongoStore) -> None:
        await self._seed(store, "d1")

        async def add(n: int) -> WriteOutcome:
            change = DeviceChange(
                now=NOW, set=(_attr("identity", f"a{n}", n),), limits={"identity": 4}
            )
            try:
                return await store.write_device("t1", "d1", change)
            except Conflict:
                return WriteOutcome.ETAG_MISMATCH

        # Each write applies only to the device as it read it: however they interleave, the
        # scope never holds more than its limit, and every write that said OK is stored.
        outcomes = await asyncio.gather(*(add(n) for n in range(8)))
        device = await store.get_device("t1", "d1")
        assert device is not None
        stored = {a.name for a in device.attributes if a.scope == "identity"}
        assert len(stored) == 4
        assert {f"a{n}" for n, o in enumerate(outcomes) if o is WriteOutcome.OK} <= stored
