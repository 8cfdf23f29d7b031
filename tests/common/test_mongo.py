"""Tenant scoping (one tenant never sees another's documents, unscoped access is caught) and
transactions retried on conflicts."""

from __future__ import annotations

from typing import Final

import pytest
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from common.core.mongo import (
    Document,
    TenantCollection,
    TransactionConflict,
    atomically,
    create_client,
    transaction,
)
from tests import conftest
from tests.toolkit import failing_commands
from tests.toolkit.commands import recording

_TRANSIENT: Final = "TransientTransactionError"


class TestTenantCollection:
    async def test_isolation(self, mongo: AsyncMongoClient[Document], db_name: str) -> None:
        coll = mongo[db_name].devices
        a, b = TenantCollection(coll, "a"), TenantCollection(coll, "")
        await a.insert_one({"_id": "1", "name": "x"})
        await b.insert_one({"_id": "2", "name": "x"})
        assert [d["_id"] for d in await a.find({"name": "x"}).to_list()] == ["1"]
        assert await b.find_one({"_id": "1"}) is None
        assert (await b.update_one({"_id": "1"}, {"$set": {"name": "y"}})).matched_count == 0
        assert (await b.delete_many({})).deleted_count == 1
        assert await a.count_documents({}) == 1
        cursor = await a.aggregate([{"$group": {"_id": None, "n": {"$sum": 1}}}])
        assert (await cursor.to_list())[0]["n"] == 1
        async with transaction(mongo) as session:
            doc = await a.find_one_and_update(
                {"_id": "1"}, {"$set": {"name": "z"}}, session=session
            )
            assert (
                await b.find_one_and_update({"_id": "1"}, {"$set": {"name": "w"}}, session=session)
                is None
            )
        assert doc is not None
        assert doc["tenant_id"] == "a"
        assert doc["name"] == "z"

    async def test_read_and_write_in_a_transaction(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        coll = mongo[db_name].counters
        a, b = TenantCollection(coll, "a"), TenantCollection(coll, "b")
        await a.insert_many([{"_id": "1", "n": 1}, {"_id": "2", "n": 5}])
        await b.insert_one({"_id": "3", "n": 1})
        with recording(db_name) as recorder:
            async with transaction(mongo) as session:
                after = await a.find_one_and_update(
                    {"_id": "1", "n": {"$gt": 0}}, {"$inc": {"n": 1}}, session=session
                )
                unmet = await a.find_one_and_update(
                    {"_id": "2", "n": {"$lt": 0}}, {"$inc": {"n": 1}}, session=session
                )
                before = await a.find_one_and_update(
                    {"_id": "2"},
                    {"$inc": {"n": 1}},
                    return_document=ReturnDocument.BEFORE,
                    session=session,
                )
                foreign = await a.find_one_and_update(
                    {"_id": "3"}, {"$inc": {"n": 1}}, session=session
                )
                deleted = await a.find_one_and_delete({"_id": "1"}, session=session)
                not_deleted = await a.find_one_and_delete({"_id": "3"}, session=session)
        assert after == {"_id": "1", "n": 2, "tenant_id": "a"}
        assert unmet is None
        assert before == {"_id": "2", "n": 5, "tenant_id": "a"}
        assert foreign is None
        assert not_deleted is None
        assert deleted == after
        assert await coll.find({}, sort=[("_id", 1)]).to_list() == [
            {"_id": "2", "n": 6, "tenant_id": "a"},
            {"_id": "3", "n": 1, "tenant_id": "b"},
        ]
        # The embedded server's findAndModify scans the collection to write.
        assert "findAndModify" not in recorder.names

    async def test_read_and_write_needs_a_transaction(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        a = TenantCollection(mongo[db_name].counters, "a")
        await a.insert_one({"_id": "1", "n": 1})
        async with mongo.start_session() as session:
            with pytest.raises(RuntimeError, match="transaction"):
                await a.find_one_and_update({"_id": "1"}, {"$inc": {"n": 1}}, session=session)
            with pytest.raises(RuntimeError, match="transaction"):
                await a.find_one_and_delete({"_id": "1"}, session=session)
        assert await a.find_one({"_id": "1"}) == {"_id": "1", "n": 1, "tenant_id": "a"}

    async def test_upsert_stays_in_tenant(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        coll = TenantCollection(mongo[db_name].devices, "t1")
        await coll.update_one({"_id": "9"}, {"$set": {"v": 1}}, upsert=True)
        raw = await mongo[db_name].devices.find_one({"_id": "9", "tenant_id": "t1"})
        assert raw == {"_id": "9", "tenant_id": "t1", "v": 1}

    async def test_write_each_stays_in_tenant(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        raw = mongo[db_name].devices
        a, b = TenantCollection(raw, "a"), TenantCollection(raw, "b")
        await a.insert_one({"_id": "1", "v": 0})
        await b.insert_one({"_id": "3", "v": 0})
        result = await b.write_each(
            [({"_id": "1"}, {"$set": {"v": 1}}), ({"_id": "3"}, {"$set": {"v": 1}})],
            inserts=[{"_id": "2", "v": 0}],
        )
        # The insert is the tenant's, and the updates reach only the tenant's documents.
        assert (result.inserted_count, result.matched_count) == (1, 1)
        both = {"tenant_id": {"$in": ["a", "b"]}}
        assert await raw.find(both).sort("_id").to_list() == [
            {"_id": "1", "tenant_id": "a", "v": 0},
            {"_id": "2", "tenant_id": "b", "v": 0},
            {"_id": "3", "tenant_id": "b", "v": 1},
        ]

    async def test_insert_new_leaves_what_exists(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        coll = mongo[db_name].devices
        mine, other = TenantCollection(coll, "a"), TenantCollection(coll, "b")
        await mine.insert_one({"_id": "1", "name": "kept"})
        await other.insert_one({"_id": "2", "name": "another tenant's"})
        with recording(db_name) as recorded:
            assert await mine.insert_new([]) == 0
            docs = [{"_id": i, "name": "new"} for i in ("1", "2", "3", "4")]
            assert await mine.insert_new(docs) == 2
        assert recorded.names == ["insert"]
        assert {d["_id"]: d["name"] async for d in coll.find({})} == {
            "1": "kept",
            "2": "another tenant's",
            "3": "new",
            "4": "new",
        }
        assert await mine.count_documents({}) == 3


class TestGuard:
    async def test_unscoped_query_is_recorded(self, mongo_url: str, db_name: str) -> None:
        client = create_client(mongo_url)
        try:
            await client[db_name].devices.find_one({"_id": "nope"})
        finally:
            await client.close()
        found = list(conftest._tenant_guard.violations)
        conftest._tenant_guard.violations.clear()  # this test broke the rule on purpose
        assert found
        assert "find on devices" in found[0]


class TestAtomically:
    async def test_conflicts_are_retried_from_the_start(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        coll = mongo[db_name].things
        runs: list[int] = []

        async def work(session: AsyncClientSession) -> str:
            runs.append(1)
            await coll.insert_one({"_id": len(runs)}, session=session)
            await coll.update_one({"_id": len(runs)}, {"$set": {"done": True}}, session=session)
            return "ok"

        async with failing_commands(mongo, ["update"], times=2, code=112, labels=[_TRANSIENT]):
            assert await atomically(mongo, work) == "ok"
        assert len(runs) == 3
        # The two conflicting attempts left nothing behind.
        assert await coll.find({}).to_list() == [{"_id": 3, "done": True}]

    async def test_gives_up_with_503(self, mongo: AsyncMongoClient[Document], db_name: str) -> None:
        coll = mongo[db_name].things

        async def work(session: AsyncClientSession) -> None:
            await coll.insert_one({"_id": 1}, session=session)

        async with failing_commands(mongo, ["insert"], times=3, code=112, labels=[_TRANSIENT]):
            with pytest.raises(TransactionConflict) as caught:
                await atomically(mongo, work, attempts=3)
        assert caught.value.status_code == 503
        assert caught.value.message == "the change conflicts with concurrent changes; retry"
        assert await coll.count_documents({}) == 0

    async def test_other_failures_propagate_and_leave_nothing(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        coll = mongo[db_name].things
        runs: list[int] = []

        async def work(session: AsyncClientSession) -> None:
            runs.append(1)
            await coll.insert_one({"_id": 1}, session=session)
            raise ValueError("refused")

        with pytest.raises(ValueError, match="refused"):
            await atomically(mongo, work)
        assert runs == [1]
        assert await coll.count_documents({}) == 0
