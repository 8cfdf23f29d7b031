"""Tenant scoping: one tenant never sees another's documents, and unscoped access is caught."""

from __future__ import annotations

from pymongo import AsyncMongoClient

from common.core.mongo import Document, TenantCollection, create_client
from tests import conftest


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
        doc = await a.find_one_and_update({"_id": "1"}, {"$set": {"name": "z"}})
        assert doc is not None
        assert doc["tenant_id"] == "a"
        assert doc["name"] == "z"

    async def test_upsert_stays_in_tenant(
        self, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        coll = TenantCollection(mongo[db_name].devices, "t1")
        await coll.update_one({"_id": "9"}, {"$set": {"v": 1}}, upsert=True)
        raw = await mongo[db_name].devices.find_one({"_id": "9", "tenant_id": "t1"})
        assert raw == {"_id": "9", "tenant_id": "t1", "v": 1}


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
