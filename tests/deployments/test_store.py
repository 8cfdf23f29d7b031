"""The Mongo store against the real database: query plans and costs of the hot path, rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from common.core.mongo import Document, ensure_indexes
from services.deployments.models import (
    STAT_NAMES,
    Artifact,
    ArtifactMeta,
    Deployment,
    DeviceDeployment,
    DeviceDeploymentStatus,
)
from services.deployments.store import DuplicateArtifact, DuplicateId, StatsChange
from services.deployments.store.indexes import INDEXES
from services.deployments.store.mongo import MongoStore
from tests.deployments.conftest import Service
from tests.deployments.flows import create_deployment, poll, report
from tests.deployments.helpers import ArtifactFactory

_READS = ("find", "findAndModify", "update", "delete", "count", "aggregate", "insert")


class _Recorder(monitoring.CommandListener):
    """Records the commands sent to one database while active."""

    def __init__(self) -> None:
        self.database = ""
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database and event.command_name in _READS:
            self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_recorder = _Recorder()
monitoring.register(_recorder)


@pytest.fixture
def recorder(db_name: str) -> Iterator[_Recorder]:
    """Commands the service sends to its database during the test."""
    _recorder.database = db_name
    _recorder.commands.clear()
    try:
        yield _recorder
    finally:
        _recorder.database = ""


def _filters(name: str, command: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    if name == "find":
        return [(command.get("filter") or {}, command.get("sort"))]
    if name == "findAndModify":
        return [(command.get("query") or {}, command.get("sort"))]
    if name == "update":
        return [(u.get("q") or {}, None) for u in command.get("updates", [])]
    if name == "count":
        return [(command.get("query") or {}, None)]
    return []


async def _assert_indexed(mongo: AsyncMongoClient[Document], db: str, recorded: _Recorder) -> None:
    for name, command in recorded.commands:
        collection = command[name]
        for filter_, sort in _filters(name, command):
            find: dict[str, Any] = {"find": collection, "filter": filter_, "limit": 1}
            if sort:
                find["sort"] = sort
            plan = await mongo[db].command({"explain": find, "verbosity": "queryPlanner"})
            assert "COLLSCAN" not in str(plan["queryPlanner"]["winningPlan"]), (
                f"{name} on {collection} with {filter_} scans the collection"
            )


class TestHotPath:
    async def test_poll_and_report_costs(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        recorder: _Recorder,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev", "other"]
        )
        db = service.settings.mongo_db

        recorder.commands.clear()
        assert (await poll(service.client, "nobody")).status_code == 204
        assert [c[0] for c in recorder.commands] == ["find", "find", "find"]
        await _assert_indexed(mongo, db, recorder)

        recorder.commands.clear()
        assert (await poll(service.client, "dev")).status_code == 200
        # active, latest finished, next deployment, artifact, counters claim, insert.
        assert len(recorder.commands) == 6
        await _assert_indexed(mongo, db, recorder)

        recorder.commands.clear()
        assert (await poll(service.client, "dev")).status_code == 200
        assert [c[0] for c in recorder.commands] == ["find"]

        recorder.commands.clear()
        assert (
            await report(service.client, "dev", deployment_id, "downloading")
        ).status_code == 204
        # device deployment, compare-and-set, counters $inc, deployment → inprogress (once).
        assert len(recorder.commands) <= 5
        await _assert_indexed(mongo, db, recorder)

        recorder.commands.clear()
        assert (await report(service.client, "dev", deployment_id, "installing")).status_code == 204
        assert len(recorder.commands) == 3


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


@pytest.fixture
async def store(mongo: AsyncMongoClient[Document], db_name: str) -> MongoStore:
    """A store on a fresh database with its indexes."""
    await ensure_indexes(mongo[db_name], INDEXES)
    return MongoStore(mongo[db_name])


class TestArtifacts:
    async def test_conflict_names_the_combination(self, store: MongoStore) -> None:
        await store.insert_artifact("", _artifact("n", ["a", "b"], checksum="1"))
        with pytest.raises(DuplicateArtifact) as caught:
            await store.insert_artifact("", _artifact("n", ["b"], checksum="1"))
        assert caught.value.conflict == {"checksum": "1", "device_type": "b"}
        await store.insert_artifact("", _artifact("n", ["b"], checksum="2"))
        await store.insert_artifact("other-tenant", _artifact("n", ["a"], checksum="1"))

    async def test_duplicate_id(self, store: MongoStore) -> None:
        artifact = _artifact("n", ["a"])
        await store.insert_artifact("", artifact)
        with pytest.raises(DuplicateId):
            await store.insert_artifact(
                "", artifact.model_copy(update={"meta": _artifact("m", ["a"]).meta})
            )

    async def test_release_follows_artifacts(self, store: MongoStore) -> None:
        first, second = _artifact("r", ["a"]), _artifact("r", ["b"])
        for artifact in (first, second, second):
            await store.add_to_release("", artifact)
        release = await store.get_release("", "r")
        assert release is not None
        assert release.artifacts_count == 2
        assert release.device_types == ["a", "b"]
        await store.remove_from_release("", first)
        await store.remove_from_release("", first)
        release = await store.get_release("", "r")
        assert release is not None
        assert release.artifacts_count == 1
        await store.remove_from_release("", second)
        assert await store.get_release("", "r") is None


class TestDeploymentCounters:
    async def test_status_moves_forward_only(self, store: MongoStore) -> None:
        deployment = _deployment(["a", "b"])
        await store.insert_deployment("", deployment, checksum="c")
        start = StatsChange(decrement="pending", increment="downloading", devices=1)
        assert await store.change_stats("", deployment.id, start, require_room=True)
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.status == "inprogress"
        assert found.device_count == 1
        done = StatsChange(decrement="downloading", increment="success")
        await store.change_stats("", deployment.id, done)
        second = StatsChange(decrement="pending", increment="failure", devices=1)
        assert await store.change_stats("", deployment.id, second, require_room=True)
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.status == "finished"
        assert found.active is False
        assert found.finished is not None
        # No room is left, and undoing a count never reopens the deployment.
        assert not await store.change_stats("", deployment.id, second, require_room=True)
        await store.change_stats("", deployment.id, done.inverse())
        found = await store.get_deployment("", deployment.id)
        assert found is not None
        assert found.status == "finished"
        assert await store.find_next_deployment("", "a", None) is None

    async def test_unknown_deployment(self, store: MongoStore) -> None:
        assert not await store.change_stats("", str(uuid.uuid4()), StatsChange(increment="success"))


class TestDeviceDeployments:
    async def test_one_live_per_device_and_history_reset(self, store: MongoStore) -> None:
        deployment = _deployment(["dev"])
        now = datetime.now(UTC)
        dd = DeviceDeployment(
            id=str(uuid.uuid4()),
            deployment_id=deployment.id,
            device_id="dev",
            status=DeviceDeploymentStatus.SUCCESS,
            active=False,
            created=now,
        )
        stored, created = await store.insert_device_deployment("", dd)
        assert created
        again, created = await store.insert_device_deployment(
            "", dd.model_copy(update={"id": str(uuid.uuid4())})
        )
        assert not created
        assert again.id == stored.id
        latest = await store.find_latest_inactive_device_deployment("", "dev")
        assert latest is not None
        assert latest.id == dd.id
        await store.delete_device_history("", "dev", now + timedelta(seconds=1))
        assert await store.find_latest_inactive_device_deployment("", "dev") is None
        assert await store.get_device_deployment("", deployment.id, "dev") is None
        _, created = await store.insert_device_deployment(
            "", dd.model_copy(update={"id": str(uuid.uuid4())})
        )
        assert created
