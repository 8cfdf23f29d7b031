"""The Mongo store against the real database: uniqueness, scoping, transactions, indexes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document, create_client, ensure_indexes
from common.core.outbox import Effect, Outbox
from common.core.revocations import RevocationFeed
from services.deviceauth.models import AuthSet, AuthStatus, Device, DeviceStatus, Token
from services.deviceauth.store import DataStore, DuplicateError
from services.deviceauth.store.indexes import INDEXES
from services.deviceauth.store.mongo import MongoStore

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture
async def store(mongo_url: str, db_name: str) -> AsyncIterator[MongoStore]:
    """A store on a fresh database with deviceauth's indexes."""
    client = create_client(mongo_url)
    try:
        db = client[db_name]
        await ensure_indexes(db, INDEXES)
        yield MongoStore(
            client, db, outbox=Outbox(db, {"inventory"}), revocations=RevocationFeed(db)
        )
    finally:
        await client.close()


def _device(sha: str = "a" * 64, status: DeviceStatus = DeviceStatus.PENDING) -> Device:
    return Device(
        id=str(uuid.uuid4()),
        id_data='{"mac":"x"}',
        id_data_sha256=sha,
        status=status,
        created_ts=NOW,
        updated_ts=NOW,
    )


def _auth_set(
    device: Device, pubkey: str = "PEM", status: AuthStatus = AuthStatus.PENDING
) -> AuthSet:
    return AuthSet(
        id=str(uuid.uuid4()),
        device_id=device.id,
        id_data=device.id_data,
        id_data_sha256=device.id_data_sha256,
        pubkey=pubkey,
        status=status,
        ts=NOW,
    )


class TestDevices:
    async def test_round_trip(self, store: MongoStore) -> None:
        device = _device()
        await store.insert_device("", device)
        assert await store.get_device("", device.id) == device
        assert await store.get_device_by_identity("", device.id_data_sha256) == device

    async def test_identity_unique_per_tenant(self, store: MongoStore) -> None:
        await store.insert_device("", _device())
        with pytest.raises(DuplicateError):
            await store.insert_device("", _device())
        await store.insert_device("t1", _device())

    async def test_scoped_to_tenant(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device = _device()
        await store.insert_device("t1", device)
        assert await store.get_device("", device.id) is None
        assert await store.get_device("t2", device.id) is None
        assert await store.count_devices("", status=None) == 0
        stored = await mongo[db_name]["devices"].find_one({"_id": device.id})
        assert stored is not None
        assert stored["tenant_id"] == "t1"
        assert stored["status"] == "pending"

    async def test_list_order_filters_paging(self, store: MongoStore) -> None:
        devices = [
            _device(f"{i:064d}", status)
            for i, status in enumerate(
                [DeviceStatus.REJECTED, DeviceStatus.ACCEPTED, DeviceStatus.PENDING] * 2
            )
        ]
        for d in devices:
            await store.insert_device("", d)
        listed = await store.list_devices("", statuses=[], ids=[], skip=0, limit=10)
        assert [(d.status, d.id) for d in listed] == sorted((d.status, d.id) for d in devices)
        accepted = await store.list_devices(
            "", statuses=[DeviceStatus.ACCEPTED], ids=[], skip=0, limit=10
        )
        assert {d.id for d in accepted} == {devices[1].id, devices[4].id}
        page = await store.list_devices("", statuses=[], ids=[], skip=2, limit=3)
        assert page == listed[2:5]
        by_id = await store.list_devices(
            "", statuses=[], ids=[devices[0].id, "nope"], skip=0, limit=10
        )
        assert [d.id for d in by_id] == [devices[0].id]
        assert await store.count_devices("", status=DeviceStatus.PENDING) == 2

    async def test_status_update_bumps_revision(self, store: MongoStore) -> None:
        device = _device()
        await store.insert_device("", device)
        later = NOW + timedelta(minutes=1)
        updated = await store.update_device_status(
            "", device.id, status=DeviceStatus.ACCEPTED, now=later
        )
        assert updated is not None
        assert (updated.status, updated.revision, updated.updated_ts) == (
            DeviceStatus.ACCEPTED,
            2,
            later,
        )
        assert (
            await store.update_device_status(
                "t1", device.id, status=DeviceStatus.ACCEPTED, now=later
            )
            is None
        )

    async def test_admit(self, store: MongoStore) -> None:
        device = _device(status=DeviceStatus.PREAUTHORIZED)
        await store.insert_device("", device)
        later = NOW + timedelta(minutes=1)
        await store.admit_device("t1", device.id, now=later, newly=True, check_in=True)
        assert await store.get_device("", device.id) == device
        await store.admit_device("", device.id, now=later, newly=True, check_in=True)
        admitted = await store.get_device("", device.id)
        assert admitted == device.model_copy(
            update={
                "status": DeviceStatus.ACCEPTED,
                "provisioned": True,
                "revision": 2,
                "updated_ts": later,
                "check_in_time": later,
                "check_in_synced_ts": later,
            }
        )
        # Already accepted: neither its revision nor its check-in move.
        await store.admit_device(
            "", device.id, now=later + timedelta(days=1), newly=False, check_in=False
        )
        assert await store.get_device("", device.id) == admitted

    async def test_check_in(self, store: MongoStore) -> None:
        device = _device()
        await store.insert_device("", device)
        assert await store.touch_check_in("", device.id, now=NOW, last=None)
        later = NOW + timedelta(seconds=30)
        assert not await store.touch_check_in("", device.id, now=later, last=None)
        assert await store.touch_check_in("", device.id, now=later, last=NOW)
        assert await store.sync_check_in("", device.id, now=later, synced=None)
        assert not await store.sync_check_in("", device.id, now=later, synced=None)
        stored = await store.get_device("", device.id)
        assert stored is not None
        assert stored.check_in_time == later
        assert stored.check_in_synced_ts == later


class TestAuthSets:
    async def test_identity_and_key_unique(self, store: MongoStore) -> None:
        device = _device()
        await store.insert_auth_set("", _auth_set(device))
        with pytest.raises(DuplicateError):
            await store.insert_auth_set("", _auth_set(device))
        await store.insert_auth_set("", _auth_set(device, pubkey="OTHER"))
        await store.insert_auth_set("t1", _auth_set(device))

    async def test_lookups(self, store: MongoStore) -> None:
        device = _device()
        first = _auth_set(device)
        await store.insert_auth_set("", first)
        assert await store.get_auth_set("", first.id) == first
        assert await store.get_auth_set("", first.id, device_id=device.id) == first
        assert await store.get_auth_set("", first.id, device_id="other") is None
        assert await store.get_auth_set("t1", first.id) is None
        found = await store.find_auth_set("", id_data_sha256=device.id_data_sha256, pubkey="PEM")
        assert found == first
        assert await store.list_auth_sets("", [device.id]) == [first]
        assert await store.list_auth_sets("", []) == []

    async def test_stamp_only_accepted(self, store: MongoStore) -> None:
        device = _device()
        accepted = _auth_set(device, "K1", AuthStatus.ACCEPTED)
        pending = _auth_set(device, "K2")
        for a in (accepted, pending):
            await store.insert_auth_set("", a)
        assert await store.stamp_accepted_auth_set("", accepted.id, now=NOW)
        assert not await store.stamp_accepted_auth_set("", pending.id, now=NOW)
        assert not await store.stamp_accepted_auth_set("t1", accepted.id, now=NOW)

    async def test_delete(self, store: MongoStore) -> None:
        device = _device()
        sets = [_auth_set(device, f"K{i}") for i in range(3)]
        for a in sets:
            await store.insert_auth_set("", a)
        assert await store.delete_auth_set("", sets[0].id)
        assert not await store.delete_auth_set("", sets[0].id)
        assert await store.delete_auth_sets_of_device("t1", device.id) == 0
        assert await store.delete_auth_sets_of_device("", device.id) == 2


class TestTokens:
    async def test_save_replace_delete(self, store: MongoStore) -> None:
        token = Token(id="jti", device_id="dev", issued_at=NOW, expires_at=NOW + timedelta(days=7))
        await store.save_token("", token)
        renewed = token.model_copy(update={"expires_at": NOW + timedelta(days=8)})
        await store.save_token("", renewed)
        assert await store.get_token("", "jti") == renewed
        assert await store.get_token("t1", "jti") is None
        assert not await store.delete_token("t1", "jti")
        assert await store.delete_token("", "jti")

    async def test_bulk_delete(self, store: MongoStore) -> None:
        expiry = NOW + timedelta(days=1)
        for jti, dev in [("a", "d1"), ("b", "d1"), ("c", "d2"), ("d", "d3")]:
            await store.save_token(
                "", Token(id=jti, device_id=dev, issued_at=NOW, expires_at=expiry)
            )
        await store.save_token(
            "t1", Token(id="e", device_id="d1", issued_at=NOW, expires_at=expiry)
        )
        assert await store.delete_tokens("", device_id="d1") == 2
        assert await store.delete_tokens("", token_ids=[]) == 0
        assert await store.delete_tokens("", token_ids=["c", "x"]) == 1
        assert await store.delete_tokens("") == 1
        assert await store.get_token("t1", "e") is not None


class TestLimits:
    async def test_put_get_delete(self, store: MongoStore) -> None:
        assert await store.get_limit("", "max_devices") is None
        await store.put_limit("", "max_devices", 3)
        await store.put_limit("", "max_devices", 4)
        await store.put_limit("t1", "max_devices", 9)
        assert await store.get_limit("", "max_devices") == 4
        await store.delete_limit("", "max_devices")
        assert await store.get_limit("", "max_devices") is None
        assert await store.get_limit("t1", "max_devices") == 9


class TestAtomically:
    async def test_commits_changes_and_effects_together(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device = _device()

        async def work(tx: DataStore) -> str:
            await tx.insert_device("", device)
            await tx.insert_auth_set("", _auth_set(device))
            await tx.add_effects([Effect("inventory", "POST", "/x", [1])])
            return "done"

        assert await store.atomically(work) == "done"
        assert await store.get_device("", device.id) is not None
        assert await mongo[db_name]["outbox"].count_documents({"path": "/x"}) == 1

    async def test_failure_leaves_nothing(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        existing = _device()
        await store.insert_device("", existing)
        newcomer = _device(sha="b" * 64)

        async def work(tx: DataStore) -> None:
            await tx.insert_device("", newcomer)
            await tx.add_effects([Effect("inventory", "POST", "/y", [])])
            await tx.insert_device("", _device())  # same identity as `existing`

        with pytest.raises(DuplicateError):
            await store.atomically(work)
        assert await store.get_device("", newcomer.id) is None
        assert await mongo[db_name]["outbox"].count_documents({}) == 0


class TestIndexes:
    async def test_created(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        db = mongo[db_name]
        devices = await db["devices"].index_information()
        assert devices["tenant_identity"]["unique"] is True
        assert devices["tenant_identity"]["key"] == [("tenant_id", 1), ("id_data_sha256", 1)]
        assert devices["tenant_status_id"]["key"] == [("tenant_id", 1), ("status", 1), ("_id", 1)]
        auth_sets = await db["auth_sets"].index_information()
        assert auth_sets["tenant_identity_key"]["unique"] is True
        assert auth_sets["tenant_device"]["key"] == [("tenant_id", 1), ("device_id", 1)]
        tokens = await db["tokens"].index_information()
        assert tokens["expiry"]["expireAfterSeconds"] == 0
        assert tokens["expiry"]["key"] == [("exp.time", 1)]
        assert tokens["tenant_device"]["key"] == [("tenant_id", 1), ("sub", 1)]
        limits = await db["limits"].index_information()
        assert limits["tenant_name"]["unique"] is True
