"""The use-cases with a real store, including races between concurrent requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from pymongo import AsyncMongoClient

from common.core.errors import ServiceError
from common.core.mongo import Document, create_client, ensure_indexes
from common.core.outbox import Outbox
from common.core.pages import Page
from common.core.revocations import RevocationFeed
from common.core.tokens import TokenVerifier, load_signing_key
from services.deviceauth.app import Admission, DevAuthApp, DeviceAuthApp
from services.deviceauth.app.errors import DeviceExists, DeviceUnauthorized
from services.deviceauth.models import AuthStatus, DeviceStatus, device_status_from
from services.deviceauth.store import DataStore
from services.deviceauth.store.indexes import INDEXES
from services.deviceauth.store.mongo import MongoStore
from tests.deviceauth.conftest import FakeDevice, PrivateKey, generate_device_key, sign
from tests.toolkit.commands import assert_indexed, recording
from tests.toolkit.devices import device_id_of

T = TypeVar("T")


class _RacingStore(MongoStore):
    """A store that lets another request's change commit just before the next transaction."""

    meanwhile: Callable[[], Awaitable[None]] | None = None

    async def atomically(self, work: Callable[[DataStore], Awaitable[T]]) -> T:
        if self.meanwhile is not None:
            change, self.meanwhile = self.meanwhile, None
            await change()
        return await super().atomically(work)


@pytest.fixture
async def store(mongo_url: str, db_name: str) -> AsyncIterator[_RacingStore]:
    client = create_client(mongo_url)
    try:
        db = client[db_name]
        await ensure_indexes(db, INDEXES)
        yield _RacingStore(
            client, db, outbox=Outbox(db, {"inventory"}), revocations=RevocationFeed(db)
        )
    finally:
        await client.close()


@pytest.fixture
def wakes() -> list[int]:
    return []


@pytest.fixture
def admission(store: _RacingStore, wakes: list[int]) -> Admission:
    return Admission(store, wake=lambda: wakes.append(1))


@pytest.fixture
def devauth(store: _RacingStore, admission: Admission) -> DevAuthApp:
    return DevAuthApp(store, admission)


@pytest.fixture
def device_auth(store: _RacingStore, admission: Admission, key_dir: Path) -> DeviceAuthApp:
    signer = load_signing_key(key_dir / "rsa.pem")
    return DeviceAuthApp(
        store,
        admission,
        signer=signer,
        verifier=TokenVerifier([signer]),
        issuer="Mender",
        token_lifetime=timedelta(days=7),
    )


def _request(device: FakeDevice) -> tuple[bytes, str]:
    body = device.body()
    return body, sign(device.key, body)


async def _preauthorized(devauth: DevAuthApp, device: FakeDevice) -> tuple[bytes, str]:
    """Preauthorize `device`; its auth request (body, signature)."""
    await devauth.preauthorize("", identity_data=device.identity, pubkey=device.pubkey, force=False)
    return _request(device)


async def _accept_all(devauth: DevAuthApp) -> None:
    devices, _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 500))
    for d in devices:
        for a in d.auth_sets:
            await devauth.set_auth_set_status("", d.id, a.id, status="accepted")


class TestAuthenticate:
    async def test_reject_racing_the_token(
        self,
        devauth: DevAuthApp,
        device_auth: DeviceAuthApp,
        store: _RacingStore,
        device: FakeDevice,
    ) -> None:
        body, signature = _request(device)
        with pytest.raises(DeviceUnauthorized):
            await device_auth.authenticate(body, signature=signature)
        await _accept_all(devauth)
        [view], _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 20))
        auth_id = view.auth_sets[0].id

        async def reject() -> None:
            await devauth.set_auth_set_status("", view.id, auth_id, status="rejected")

        store.meanwhile = reject
        with pytest.raises(DeviceUnauthorized):
            await device_auth.authenticate(body, signature=signature)
        assert await store.get_token("", auth_id) is None

    async def test_reject_concurrent_with_token_requests(
        self,
        devauth: DevAuthApp,
        device_auth: DeviceAuthApp,
        store: _RacingStore,
        device: FakeDevice,
    ) -> None:
        body, signature = _request(device)
        with pytest.raises(DeviceUnauthorized):
            await device_auth.authenticate(body, signature=signature)
        [view], _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 20))
        auth_id = view.auth_sets[0].id
        for _ in range(3):
            await devauth.set_auth_set_status("", view.id, auth_id, status="accepted")
            await asyncio.gather(
                *(device_auth.authenticate(body, signature=signature) for _ in range(3)),
                devauth.set_auth_set_status("", view.id, auth_id, status="rejected"),
                return_exceptions=True,
            )
            # Whatever the interleaving, a rejected auth set keeps no token.
            assert await store.get_token("", auth_id) is None

    async def test_concurrent_first_contacts(
        self, devauth: DevAuthApp, device_auth: DeviceAuthApp, device: FakeDevice, wakes: list[int]
    ) -> None:
        body, signature = _request(device)
        results = await asyncio.gather(
            *(device_auth.authenticate(body, signature=signature) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, DeviceUnauthorized) for r in results), results
        devices, _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 20))
        assert len(devices) == 1
        assert len(devices[0].auth_sets) == 1
        assert devices[0].status is DeviceStatus.PENDING
        assert wakes

    async def test_concurrent_accepts_of_a_preauthorized_device(
        self, devauth: DevAuthApp, device_auth: DeviceAuthApp, device: FakeDevice
    ) -> None:
        body, signature = await _preauthorized(devauth, device)
        tokens = await asyncio.gather(
            *(device_auth.authenticate(body, signature=signature) for _ in range(4))
        )
        assert all(t.count(".") == 2 for t in tokens)
        [view], _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 20))
        assert view.status is DeviceStatus.ACCEPTED
        assert view.provisioned
        assert view.revision == 2

    async def test_a_preauthorized_key_dismissed_meanwhile_gets_no_token(
        self,
        devauth: DevAuthApp,
        device_auth: DeviceAuthApp,
        store: _RacingStore,
        device: FakeDevice,
    ) -> None:
        body, signature = await _preauthorized(devauth, device)
        # The same device asks with another key too: it stays, pending, when the
        # preauthorized key goes.
        other = FakeDevice(generate_device_key("p256"), device.identity)
        other_body, other_signature = _request(other)
        with pytest.raises(DeviceUnauthorized):
            await device_auth.authenticate(other_body, signature=other_signature)
        [view], _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 20))
        [preauthorized] = [a for a in view.auth_sets if a.status is AuthStatus.PREAUTHORIZED]

        async def dismiss() -> None:
            await devauth.delete_auth_set("", view.id, preauthorized.id)

        # Read as preauthorized, dismissed before the transaction that would accept it.
        store.meanwhile = dismiss
        with pytest.raises(DeviceUnauthorized):
            await device_auth.authenticate(body, signature=signature)
        assert await store.get_token("", preauthorized.id) is None
        [view], _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 20))
        assert view.status is DeviceStatus.PENDING
        assert [a.status for a in view.auth_sets] == [AuthStatus.PENDING]


class TestAuthenticationCost:
    """What one auth request costs the database: a few commands, each served by an index."""

    async def test_first_authentication_of_a_preauthorized_device(
        self,
        devauth: DevAuthApp,
        device_auth: DeviceAuthApp,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        body, signature = await _preauthorized(devauth, device)
        with recording(db_name) as recorded:
            token = await device_auth.authenticate(body, signature=signature)
        # The auth set; then one transaction: the device, the limit, acceptance of the auth
        # set (the device is not accepted yet: no other key to reject, so no read of them),
        # the device (accepted, provisioned, checked in), every effect at once, the
        # revocations of the token's id and tenant, the token, commit.
        assert recorded.names == [
            "find",
            "find",
            "find",
            "update",
            "update",
            "insert",
            "find",
            "update",
            "commitTransaction",
        ]
        await assert_indexed(mongo, db_name, recorded)
        device_id = device_id_of(token)
        outbox = mongo[db_name]["outbox"]
        effects = [e async for e in outbox.find({}).sort("_id", 1)]
        # (Only inventory is deployed here.) The preauthorization's identity and status,
        # then the accepted status with the first check-in: one effect, one write there.
        assert [e["path"].rsplit("/", 1)[1] for e in effects] == [
            "identity",
            "preauthorized",
            "accepted",
        ]
        [view], _ = await devauth.list_devices("", statuses=[], ids=[], page=Page(1, 20))
        assert view.status is DeviceStatus.ACCEPTED
        assert view.provisioned
        assert view.revision == 2
        assert view.check_in_time is not None
        [item] = effects[2]["body"]
        assert item.keys() == {"id", "revision", "check_in_time"}
        assert (item["id"], item["revision"]) == (device_id, 2)
        # The database keeps milliseconds.
        sent = datetime.fromisoformat(item["check_in_time"])
        assert sent.replace(microsecond=sent.microsecond // 1000 * 1000) == view.check_in_time

    async def test_token_renewal(
        self,
        devauth: DevAuthApp,
        device_auth: DeviceAuthApp,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        body, signature = await _preauthorized(devauth, device)
        await device_auth.authenticate(body, signature=signature)
        with recording(db_name) as recorded:
            await device_auth.authenticate(body, signature=signature)
        # The auth set; then one transaction: the device, the auth set's token time (checked
        # in a minute ago at most: nothing to write), the revocations, the token, commit.
        assert recorded.names == ["find", "find", "update", "find", "update", "commitTransaction"]
        await assert_indexed(mongo, db_name, recorded)


class TestCheckInReport:
    async def test_one_read_and_a_write_per_device_due(
        self,
        devauth: DevAuthApp,
        device_auth: DeviceAuthApp,
        device_key: Callable[[str], PrivateKey],
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        ids = []
        for kind in ("p256", "ed25519", "p384"):
            body, signature = await _preauthorized(
                devauth, FakeDevice(device_key(kind), {"mac": kind})
            )
            ids.append(device_id_of(await device_auth.authenticate(body, signature=signature)))
        devices = mongo[db_name]["devices"]
        due = ids[:2]
        await devices.update_many({"_id": {"$in": due}}, {"$unset": {"check_in_time": 1}})
        report = [("", ids[0]), ("", ids[1]), ("", ids[2]), ("", ids[0]), ("", "gone")]
        with recording(db_name) as recorded:
            await device_auth.check_in(report)
        # One read of every reported device, one write for the two whose check-in is due
        # (the third checked in when it authenticated, less than a minute ago).
        assert recorded.names == ["find", "update"]
        await assert_indexed(mongo, db_name, recorded)
        async for stored in devices.find({"_id": {"$in": due}}):
            assert stored["check_in_time"] is not None


class TestPreauthorize:
    async def test_concurrent_preauthorizations(
        self, devauth: DevAuthApp, device_key: Callable[[str], PrivateKey]
    ) -> None:
        devices = [FakeDevice(device_key(k), {"mac": "same"}) for k in ("p256", "ed25519")]
        results = await asyncio.gather(
            *(
                devauth.preauthorize("", identity_data=d.identity, pubkey=d.pubkey, force=False)
                for d in devices
            ),
            return_exceptions=True,
        )
        created = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if isinstance(r, ServiceError)]
        assert len(created) == 1
        assert len(refused) == 1
        assert isinstance(refused[0], DeviceExists)
        assert refused[0].device.id == created[0]


class TestDeviceStatus:
    @pytest.mark.parametrize(
        ("statuses", "expected"),
        [
            ([], DeviceStatus.NOAUTH),
            ([AuthStatus.REJECTED], DeviceStatus.REJECTED),
            ([AuthStatus.REJECTED, AuthStatus.PENDING], DeviceStatus.PENDING),
            ([AuthStatus.PENDING, AuthStatus.PREAUTHORIZED], DeviceStatus.PREAUTHORIZED),
            ([AuthStatus.PREAUTHORIZED, AuthStatus.ACCEPTED], DeviceStatus.ACCEPTED),
        ],
    )
    def test_strongest_auth_set_wins(
        self, statuses: list[AuthStatus], expected: DeviceStatus
    ) -> None:
        assert device_status_from(statuses) is expected
