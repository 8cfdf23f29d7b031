"""A `kill -9` of the embedded database: no acknowledged write is lost, no device locked out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Final

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from common.core.mongo import Document, transaction
from common.localstack.embedded import EmbeddedMongo, free_port
from common.localstack.launcher import Stack
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.api import DEVAUTH, ManagementApi, RawDevice, unique_identity
from tests.toolkit import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

LOGIN: Final = "/api/management/v1/useradm/auth/login"
# Writes acknowledged by each kind of writer before the database is killed under them.
ACKED_BEFORE_KILL: Final = 150
# Devices enrolled one after the other, the database killed after each.
CRASHES: Final = 3
# While the services reconnect after the restart they may answer 503 for a moment.
RECONNECT: Final = 30.0


@pytest.fixture
def database(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """The embedded server on disk, as `make run` starts it."""
    server = EmbeddedMongo(tmp_path / "db", log=tmp_path / "database.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class _Writer:
    """Writes one document at a time until the database goes away; remembers what was acked."""

    def __init__(self, client: AsyncMongoClient[Document], *, in_transaction: bool) -> None:
        self._client = client
        self._db = client["crash"]
        self._in_transaction = in_transaction
        self.acked: list[str] = []

    async def run(self) -> None:
        """Write until a write fails (the server was killed)."""
        try:
            while True:
                doc_id = uuid.uuid4().hex
                if self._in_transaction:
                    # A change and its outbox effect, as the services write them.
                    async with transaction(self._client) as session:
                        await self._db.changes.insert_one({"_id": doc_id}, session=session)
                        await self._db.effects.insert_one({"_id": doc_id}, session=session)
                else:
                    await self._db.single.insert_one({"_id": doc_id})
                self.acked.append(doc_id)
        except PyMongoError:
            return


class TestAcknowledgedWrites:
    async def test_all_there_after_a_kill(self, database: EmbeddedMongo) -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(database.url)
        single = _Writer(client, in_transaction=False)
        transactional = _Writer(client, in_transaction=True)
        try:
            tasks = [asyncio.create_task(w.run()) for w in (single, transactional)]
            while min(len(single.acked), len(transactional.acked)) < ACKED_BEFORE_KILL:
                assert not any(t.done() for t in tasks), "a writer stopped before the kill"
                await asyncio.sleep(0.01)
            database.kill()  # writes of both writers are in flight
            await asyncio.gather(*tasks)
        finally:
            await client.close()

        # From this thread: the server is stopped when the thread that started it ends.
        database.start()
        reopened: AsyncMongoClient[Document] = AsyncMongoClient(database.url)
        try:
            db = reopened["crash"]
            found = {
                name: {doc["_id"] async for doc in db[name].find({}, {"_id": 1})}
                for name in ("single", "changes", "effects")
            }
        finally:
            await reopened.close()

        assert set(single.acked) <= found["single"]
        assert set(transactional.acked) <= found["changes"]
        # A transaction is all or nothing, acknowledged or not.
        assert found["changes"] == found["effects"]
        # Nothing was invented: at most the one write in flight per writer went through.
        assert len(found["single"]) - len(single.acked) in (0, 1)
        assert len(found["changes"]) - len(transactional.acked) in (0, 1)


@pytest.fixture
def disk_stack(database: EmbeddedMongo, tmp_path: Path) -> Iterator[Stack]:
    """Every service and the gateway on the on-disk database."""
    running = Stack(
        state_dir=tmp_path / "fleetport",
        gateway_port=free_port(),
        mongo_url=database.url,
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(disk_stack: Stack) -> Iterator[ManagementApi]:
    """The management API as a freshly created admin."""
    created = disk_stack.run_module(
        "useradm", "create-user", "--username", ADMIN_EMAIL, "--password", ADMIN_PASSWORD
    )
    assert created.returncode == 0, created.stderr
    login = httpx.post(f"{disk_stack.url}{LOGIN}", auth=(ADMIN_EMAIL, ADMIN_PASSWORD))
    assert login.status_code == 200, login.text
    client = ManagementApi(disk_stack.url, login.text)
    try:
        yield client
    finally:
        client.close()


def _once_reconnected(call: Callable[[], httpx.Response]) -> httpx.Response:
    """The first answer that is not the 503 of a service still reconnecting to the database."""

    def probe() -> httpx.Response | None:
        response = call()
        return None if response.status_code == 503 else response

    return wait_until(probe, timeout=RECONNECT, interval=0.2, what="an answer other than 503")


class TestDevicesAfterACrash:
    def test_every_enrolled_device_authenticates(
        self, database: EmbeddedMongo, disk_stack: Stack, api: ManagementApi
    ) -> None:
        devices: list[tuple[RawDevice, str]] = []
        try:
            for _ in range(CRASHES):
                device = RawDevice(disk_stack.url, unique_identity("crash"))
                assert device.auth_request().status_code == 401
                pending = api.wait_for_device(device.identity, status="pending")
                devices.append((device, pending["id"]))
                api.accept(pending)
                assert device.auth_request().status_code == 200
                # The database dies a moment after the device got its token.
                database.kill()
                database.start()

                login = _once_reconnected(
                    lambda: httpx.post(
                        f"{disk_stack.url}{LOGIN}", auth=(ADMIN_EMAIL, ADMIN_PASSWORD)
                    )
                )
                assert login.status_code == 200, login.text
                for known, device_id in devices:
                    # The token it got before the crash, checked by deviceauth.
                    answer = _once_reconnected(known.check_next)
                    assert answer.status_code == 204, f"{device_id}: {answer.text}"
                    assert answer.content == b""
                    found = _once_reconnected(
                        partial(api.http.get, f"{DEVAUTH}/devices/{device_id}")
                    )
                    assert found.status_code == 200, found.text
                    assert found.json()["status"] == "accepted"
                    assert [a["status"] for a in found.json()["auth_sets"]] == ["accepted"]
        finally:
            for device, _ in devices:
                device.close()
