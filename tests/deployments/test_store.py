"""The Mongo store against the real database: query plans and costs of the hot path, rules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.deployments.models import (
    STAT_NAMES,
    Artifact,
    ArtifactMeta,
    Deployment,
    DeviceDeployment,
    DeviceDeploymentStatus,
)
from services.deployments.store import DuplicateArtifact, DuplicateId, StatsChange
from services.deployments.store.mongo import MongoStore
from tests.deployments.conftest import Service
from tests.deployments.flows import create_deployment, poll, report
from tests.deployments.helpers import ArtifactFactory
from tests.toolkit.commands import CommandRecorder, assert_indexed, recording


@pytest.fixture
def recorder(db_name: str) -> Iterator[CommandRecorder]:
    """Commands the service sends to its database during the test."""
    with recording(db_name) as recorded:
        yield recorded


class TestHotPath:
    async def test_poll_and_report_costs(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        recorder: CommandRecorder,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev", "other"]
        )
        db = service.settings.mongo_db

        recorder.commands.clear()
        assert (await poll(service.client, "nobody")).status_code == 204
        # The tenant's active deployments, once; then a device none of them lists is
        # answered from memory.
        assert [c[0] for c in recorder.commands] == ["find"]
        await assert_indexed(mongo, db, recorder)
        recorder.commands.clear()
        assert (await poll(service.client, "nobody")).status_code == 204
        assert recorder.commands == []

        recorder.commands.clear()
        assert (await poll(service.client, "dev")).status_code == 200
        # active, latest finished, next deployment, artifact; then one transaction: counters
        # claim and read back, insert, commit.
        assert [c[0] for c in recorder.commands] == [
            "find",
            "find",
            "find",
            "find",
            "update",
            "find",
            "insert",
            "commitTransaction",
        ]
        await assert_indexed(mongo, db, recorder)

        recorder.commands.clear()
        assert (await poll(service.client, "dev")).status_code == 200
        assert [c[0] for c in recorder.commands] == ["find"]

        recorder.commands.clear()
        assert (
            await report(service.client, "dev", deployment_id, "downloading")
        ).status_code == 204
        # device deployment; one transaction: compare-and-set, counters $inc and read back,
        # deployment → inprogress (once: deployment and counters), commit.
        assert [c[0] for c in recorder.commands] == [
            "find",
            "update",
            "update",
            "find",
            "update",
            "update",
            "commitTransaction",
        ]
        await assert_indexed(mongo, db, recorder)

        recorder.commands.clear()
        assert (await report(service.client, "dev", deployment_id, "installing")).status_code == 204
        assert [c[0] for c in recorder.commands] == [
            "find",
            "update",
            "update",
            "find",
            "commitTransaction",
        ]

        recorder.commands.clear()
        assert (await report(service.client, "dev", deployment_id, "success")).status_code == 204
        # + the device's last status, in the same transaction.
        assert [c[0] for c in recorder.commands] == [
            "find",
            "update",
            "update",
            "find",
            "update",
            "commitTransaction",
        ]
        await assert_indexed(mongo, db, recorder)


def _artifact(name: str, device_types: list[str], **depends: Any) -> Artifact:
    return Artifact(
        id=str(uuid.uuid4()),
        meta=ArtifactMeta(name=name, device_types_compatible=device_types, depends=depends),
        size=100,
        modified=datetime.now(UTC),
    )


def _deployment(devices: list[str]) -> Deployment:
    stats = dict.fromkeys(STAT_NAMES, 0)
    stats["pending"] = len(devices)
    return Deployment(
        id=str(uuid.uuid4()),
        name="d",
        artifact_name="a",
        device_list=devices,
        max_devices=len(devices),
        stats=stats,
        created=datetime.now(UTC),
    )


class TestArtifacts:
    async def test_conflict_names_the_combination(self, store: MongoStore) -> None:
        await store.record_artifact("", _artifact("n", ["a", "b"], checksum="1"))
        with pytest.raises(DuplicateArtifact) as caught:
            await store.record_artifact("", _artifact("n", ["b"], checksum="1"))
        assert caught.value.conflict == {"checksum": "1", "device_type": "b"}
        await store.record_artifact("", _artifact("n", ["b"], checksum="2"))
        await store.record_artifact("other-tenant", _artifact("n", ["a"], checksum="1"))
        release = await store.get_release("", "n")
        assert release is not None
        assert release.artifacts_count == 2

    async def test_duplicate_id(self, store: MongoStore) -> None:
        artifact = _artifact("n", ["a"])
        await store.record_artifact("", artifact)
        with pytest.raises(DuplicateId):
            await store.record_artifact(
                "", artifact.model_copy(update={"meta": _artifact("m", ["a"]).meta})
            )
        # The refused one left no release behind.
        assert await store.get_release("", "m") is None

    async def test_release_follows_artifacts(self, store: MongoStore) -> None:
        first, second = _artifact("r", ["a"]), _artifact("r", ["b"])
        for artifact in (first, second):
            await store.record_artifact("", artifact)
        release = await store.get_release("", "r")
        assert release is not None
        assert release.artifacts_count == 2
        assert release.device_types == ["a", "b"]
        described = await store.describe_artifact("", first.id, "new words", datetime.now(UTC))
        assert described is not None
        assert described.description == "new words"
        release = await store.get_release("", "r")
        assert release is not None
        assert [a.description for a in release.artifacts] == ["new words", ""]
        assert await store.forget_artifact("", first.id) == described
        assert await store.forget_artifact("", first.id) is None
        release = await store.get_release("", "r")
        assert release is not None
        assert release.artifacts_count == 1
        assert await store.forget_artifact("", second.id) is not None
        assert await store.get_release("", "r") is None

    async def test_concurrent_first_artifacts_of_a_release(self, store: MongoStore) -> None:
        artifacts = [_artifact("new", [f"type-{i}"]) for i in range(6)]
        await asyncio.gather(*(store.record_artifact("", a) for a in artifacts))
        release = await store.get_release("", "new")
        assert release is not None
        assert release.artifacts_count == 6
        assert sorted(a.id for a in release.artifacts) == sorted(a.id for a in artifacts)


def _device_deployment(
    deployment: Deployment, device_id: str, status: DeviceDeploymentStatus
) -> DeviceDeployment:
    return DeviceDeployment(
        id=str(uuid.uuid4()),
        deployment_id=deployment.id,
        device_id=device_id,
        status=status,
        active=status.active,
        created=deployment.created,
    )


_START: Final = StatsChange(devices=1)


class TestDeploymentCounters:
    async def test_status_moves_forward_only(self, store: MongoStore) -> None:
        deployment = _deployment(["a", "b"])
        await store.insert_deployment("", deployment, checksum="c")
        started = await store.start_device_deployment(
            "", _device_deployment(deployment, "a", DeviceDeploymentStatus.PENDING), _START
        )
        assert started is not None
        dd, created = started
        assert created
        moved = await store.move_device_deployment(
            "", dd, status=DeviceDeploymentStatus.DOWNLOADING, now=datetime.now(UTC)
        )
        assert moved is not None
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.status == "inprogress"
        assert found.device_count == 1
        assert found.stats["downloading"] == 1
        assert found.stats["pending"] == 1
        # A stale compare-and-set changes nothing.
        assert (
            await store.move_device_deployment(
                "", dd, status=DeviceDeploymentStatus.SUCCESS, now=datetime.now(UTC)
            )
            is None
        )
        assert await store.move_device_deployment(
            "", moved, status=DeviceDeploymentStatus.SUCCESS, now=datetime.now(UTC)
        )
        failed = _device_deployment(deployment, "b", DeviceDeploymentStatus.FAILURE)
        assert await store.start_device_deployment(
            "", failed, StatsChange(decrement="pending", increment="failure", devices=1)
        )
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.status == "finished"
        assert found.active is False
        assert found.finished is not None
        assert found.stats["success"] == 1
        assert found.stats["failure"] == 1
        assert found.stats["pending"] == 0
        # No room is left, and the next poll finds nothing.
        other = _device_deployment(deployment, "c", DeviceDeploymentStatus.PENDING)
        assert await store.start_device_deployment("", other, _START) is None
        assert await store.find_next_deployment("", "a", None) is None
        # Both finished device deployments are the devices' last statuses.
        lasts = await store.last_statuses("", ["a", "b"])
        assert {(last.device_id, last.status) for last in lasts} == {
            ("a", "success"),
            ("b", "failure"),
        }

    async def test_unknown_deployment(self, store: MongoStore) -> None:
        deployment = _deployment(["a"])
        dd = _device_deployment(deployment, "a", DeviceDeploymentStatus.PENDING)
        assert await store.start_device_deployment("", dd, _START) is None
        assert await store.get_device_deployment("", deployment.id, "a") is None


class TestRecount:
    async def test_repairs_counters_a_crash_left_behind(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        deployment = _deployment(["a", "b", "c"])
        await store.insert_deployment("", deployment, checksum="c")
        for device in ("a", "b"):
            started = await store.start_device_deployment(
                "", _device_deployment(deployment, device, DeviceDeploymentStatus.PENDING), _START
            )
            assert started is not None
            await store.move_device_deployment(
                "", started[0], status=DeviceDeploymentStatus.DOWNLOADING, now=datetime.now(UTC)
            )
        assert await store.recount_stats("", deployment.id) is None
        # What an earlier version could leave after a crash between its two writes: a status
        # written whose count never moved.
        await mongo[db_name]["devices"].update_one(
            {"deviceid": "b"}, {"$set": {"status": int(DeviceDeploymentStatus.SUCCESS)}}
        )
        await mongo[db_name]["deployment_stats"].update_one(
            {"_id": deployment.id}, {"$inc": {"stats.pending": 2, "stats.installing": -2}}
        )
        recounted = await store.recount_stats("", deployment.id)
        assert recounted is not None
        before, after = recounted
        assert (before["pending"], before["downloading"], before["installing"]) == (3, 2, -2)
        expected = dict.fromkeys(STAT_NAMES, 0) | {"pending": 1, "downloading": 1, "success": 1}
        assert after == expected
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.stats == expected
        assert found.status == "inprogress"
        assert await store.unfinished_deployments() == [("", deployment.id)]

    async def test_finishes_a_deployment_whose_devices_are_all_done(
        self, store: MongoStore, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        deployment = _deployment(["a"])
        await store.insert_deployment("", deployment, checksum="c")
        started = await store.start_device_deployment(
            "", _device_deployment(deployment, "a", DeviceDeploymentStatus.PENDING), _START
        )
        assert started is not None
        await mongo[db_name]["devices"].update_one(
            {"deviceid": "a"}, {"$set": {"status": int(DeviceDeploymentStatus.SUCCESS)}}
        )
        assert await store.recount_stats("", deployment.id) is not None
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.status == "finished"
        assert found.active is False
        assert found.stats["success"] == 1
        assert await store.unfinished_deployments() == []
        # A finished deployment is never recounted (an abort keeps its own statistics).
        assert await store.recount_stats("", deployment.id) is None


class TestDeviceDeployments:
    async def test_one_live_per_device_and_history_reset(self, store: MongoStore) -> None:
        deployment = _deployment(["dev", "other"])
        await store.insert_deployment("", deployment, checksum="c")
        now = datetime.now(UTC)
        dd = _device_deployment(deployment, "dev", DeviceDeploymentStatus.SUCCESS)
        finish = StatsChange(decrement="pending", increment="success", devices=1)
        assert await store.start_device_deployment("", dd, finish) == (dd, True)
        # The device's concurrent second start changes nothing and yields the first one.
        again = dd.model_copy(update={"id": str(uuid.uuid4())})
        started = await store.start_device_deployment("", again, finish)
        assert started is not None
        assert started[0].id == dd.id
        assert not started[1]
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.device_count == 1
        assert found.stats["success"] == 1
        latest = await store.find_latest_inactive_device_deployment("", "dev")
        assert latest is not None
        assert latest.id == dd.id
        await store.delete_device_history("", "dev", now + timedelta(seconds=1))
        assert await store.find_latest_inactive_device_deployment("", "dev") is None
        assert await store.get_device_deployment("", deployment.id, "dev") is None
