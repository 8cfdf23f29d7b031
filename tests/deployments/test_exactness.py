"""Changes cut between their writes, as a crash would cut them: nothing half-done remains, a
retry converges, and the statistics always equal the device deployments' statuses.

The database refuses a chosen write (`failing_commands`); the transaction it belonged to is
never committed, exactly what a process dying at that write leaves behind.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from common.core.mongo import Document
from services.deployments.main import create_app
from services.deployments.models import STAT_NAMES, DeviceDeploymentStatus
from tests.conftest import ClientFactory
from tests.deployments.conftest import Service
from tests.deployments.flows import DEPLOYMENTS, create_deployment, poll, report, stats_of
from tests.deployments.helpers import ArtifactFactory, user_headers
from tests.toolkit import eventually, failing_commands

_LAST: Final = "/api/internal/v1/deployments/tenants//devices/deployments/last"
_CONFIGURATION: Final = "/api/internal/v1/deployments/tenants//configuration/deployments"
ARTIFACTS: Final = "/api/management/v1/deployments/artifacts"
RELEASES: Final = "/api/management/v2/deployments/deployments/releases"
_Mongo = AsyncMongoClient[Document]


def _objects(service: Service) -> list[Path]:
    """The artifact files in local storage (partial uploads aside)."""
    root = service.settings.storage_path
    return [p for p in root.rglob("*") if p.is_file() and ".partial" not in p.parts]


def _stats(**counts: int) -> dict[str, int]:
    return dict.fromkeys(STAT_NAMES, 0) | counts


async def _deployment(client: httpx.AsyncClient, deployment_id: str) -> dict[str, Any]:
    response = await client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _device_statuses(client: httpx.AsyncClient, deployment_id: str) -> dict[str, str]:
    response = await client.get(f"{DEPLOYMENTS}/{deployment_id}/devices", headers=user_headers())
    assert response.status_code == 200, response.text
    return {d["id"]: d["status"] for d in response.json()}


async def _last_statuses(client: httpx.AsyncClient, devices: list[str]) -> dict[str, str]:
    response = await client.post(_LAST, json={"device_ids": devices})
    assert response.status_code == 200, response.text
    return {
        s["device_id"]: s["device_deployment_status"]
        for s in response.json()["device_deployment_last_statuses"]
    }


async def _started(service: Service, artifacts_factory: ArtifactFactory, devices: list[str]) -> str:
    """A deployment of a real artifact to the devices."""
    assert (await service.upload(artifacts_factory.make("app-2.0"))).status_code == 201
    return await create_deployment(
        service.client, name="rollout", artifact_name="app-2.0", devices=devices
    )


async def _until(
    call: Callable[[], Awaitable[httpx.Response]], expected: int, attempts: int = 30
) -> int:
    """Retry a request that a cut failed, as the Mender client does; returns the cuts."""
    for attempt in range(attempts):
        try:
            response = await call()
        except OperationFailure:
            continue  # the request died at a refused write
        assert response.status_code == expected, response.text
        return attempt
    raise AssertionError(f"no {expected} after {attempts} attempts")


class TestStatusReport:
    async def test_cut_between_status_and_count_leaves_neither(
        self, service: Service, artifacts_factory: ArtifactFactory, mongo: _Mongo
    ) -> None:
        deployment_id = await _started(service, artifacts_factory, ["dev", "other"])
        assert (await poll(service.client, "dev")).status_code == 200
        # After the device deployment's compare-and-set: the counters' `$inc`.
        async with failing_commands(mongo, ["update"], skip=1):
            with pytest.raises(OperationFailure, match="failCommand"):
                await report(service.client, "dev", deployment_id, "downloading")
        assert await _device_statuses(service.client, deployment_id) == {"dev": "pending"}
        assert await stats_of(service.client, deployment_id) == _stats(pending=2)
        assert (await _deployment(service.client, deployment_id))["status"] == "pending"
        # The device retries: the status and its count move once.
        response = await report(service.client, "dev", deployment_id, "downloading")
        assert response.status_code == 204
        assert await _device_statuses(service.client, deployment_id) == {"dev": "downloading"}
        assert await stats_of(service.client, deployment_id) == _stats(pending=1, downloading=1)
        assert (await _deployment(service.client, deployment_id))["status"] == "inprogress"

    async def test_cut_at_the_commit_of_the_last_report(
        self, service: Service, artifacts_factory: ArtifactFactory, mongo: _Mongo
    ) -> None:
        deployment_id = await _started(service, artifacts_factory, ["dev"])
        assert (await poll(service.client, "dev")).status_code == 200
        assert (await report(service.client, "dev", deployment_id, "installing")).status_code == 204
        async with failing_commands(mongo, ["commitTransaction"]):
            with pytest.raises(OperationFailure, match="failCommand"):
                await report(service.client, "dev", deployment_id, "success")
        # Status, count, the deployment's end and the device's last status: none of them.
        assert await _device_statuses(service.client, deployment_id) == {"dev": "installing"}
        assert await stats_of(service.client, deployment_id) == _stats(installing=1)
        assert (await _deployment(service.client, deployment_id))["status"] == "inprogress"
        assert await _last_statuses(service.client, ["dev"]) == {}
        assert (await report(service.client, "dev", deployment_id, "success")).status_code == 204
        assert await stats_of(service.client, deployment_id) == _stats(success=1)
        finished = await _deployment(service.client, deployment_id)
        assert finished["status"] == "finished"
        assert finished["finished"] is not None
        assert await _last_statuses(service.client, ["dev"]) == {"dev": "success"}
        # A repeated report finds the status set and changes nothing.
        assert (await report(service.client, "dev", deployment_id, "success")).status_code == 204
        assert await stats_of(service.client, deployment_id) == _stats(success=1)

    async def test_cut_when_a_failure_starts_another_attempt(
        self, service: Service, mongo: _Mongo
    ) -> None:
        deployment_id = str(uuid.uuid4())
        created = await service.client.post(
            f"{_CONFIGURATION}/{deployment_id}/devices/dev",
            json={"name": "retried", "configuration": {"a": "b"}, "retries": 1},
        )
        assert created.status_code == 201, created.text
        assert (await poll(service.client, "dev")).status_code == 200
        for status in ("downloading", "installing"):
            assert (await report(service.client, "dev", deployment_id, status)).status_code == 204
        # After the device deployment's compare-and-set: the counters' `$inc`.
        async with failing_commands(mongo, ["update"], skip=1):
            with pytest.raises(OperationFailure, match="failCommand"):
                await report(service.client, "dev", deployment_id, "failure")
        assert await _device_statuses(service.client, deployment_id) == {"dev": "installing"}
        assert await stats_of(service.client, deployment_id) == _stats(installing=1)
        # The retried report starts the second attempt once; the device gets it again.
        assert (await report(service.client, "dev", deployment_id, "failure")).status_code == 204
        assert await _device_statuses(service.client, deployment_id) == {"dev": "pending"}
        assert await stats_of(service.client, deployment_id) == _stats(pending=1)
        again = await poll(service.client, "dev")
        assert again.status_code == 200
        assert again.json()["id"] == deployment_id


class TestFirstPoll:
    async def test_cut_between_claim_and_insert_leaves_neither(
        self, service: Service, artifacts_factory: ArtifactFactory, mongo: _Mongo
    ) -> None:
        deployment_id = await _started(service, artifacts_factory, ["dev", "other"])
        async with failing_commands(mongo, ["insert"]):  # the device deployment
            with pytest.raises(OperationFailure, match="failCommand"):
                await poll(service.client, "dev")
        assert await _device_statuses(service.client, deployment_id) == {}
        assert (await _deployment(service.client, deployment_id))["device_count"] == 0
        response = await poll(service.client, "dev")
        assert response.status_code == 200
        assert response.json()["id"] == deployment_id
        assert await _device_statuses(service.client, deployment_id) == {"dev": "pending"}
        assert (await _deployment(service.client, deployment_id))["device_count"] == 1
        assert await stats_of(service.client, deployment_id) == _stats(pending=2)


class TestAbort:
    async def test_cut_before_the_last_write_leaves_the_deployment_running(
        self, service: Service, artifacts_factory: ArtifactFactory, mongo: _Mongo
    ) -> None:
        deployment_id = await _started(service, artifacts_factory, ["dev", "other"])
        assert (await poll(service.client, "dev")).status_code == 200
        response = await report(service.client, "dev", deployment_id, "downloading")
        assert response.status_code == 204
        url = f"{DEPLOYMENTS}/{deployment_id}/status"
        # Aborting writes the device deployments, the deployment, then its counters: cut there.
        async with failing_commands(mongo, ["update"], skip=2):
            with pytest.raises(OperationFailure, match="failCommand"):
                await service.client.put(url, json={"status": "aborted"}, headers=user_headers())
        assert await _device_statuses(service.client, deployment_id) == {"dev": "downloading"}
        assert (await _deployment(service.client, deployment_id))["status"] == "inprogress"
        response = await service.client.put(url, json={"status": "aborted"}, headers=user_headers())
        assert response.status_code == 204
        assert await _device_statuses(service.client, deployment_id) == {"dev": "aborted"}
        assert (await _deployment(service.client, deployment_id))["status"] == "finished"
        assert await stats_of(service.client, deployment_id) == _stats(aborted=1)
        # The device that never asked does not get the aborted deployment.
        assert (await poll(service.client, "other")).status_code == 204


class TestStorm:
    async def test_cuts_during_a_storm_leave_exact_statistics(
        self, service: Service, artifacts_factory: ArtifactFactory, mongo: _Mongo
    ) -> None:
        devices = [f"dev-{i:02}" for i in range(24)]
        deployment_id = await _started(service, artifacts_factory, devices)

        async def device(device_id: str) -> int:
            cuts = await _until(functools.partial(poll, service.client, device_id), 200)
            for status in ("downloading", "installing", "success"):
                call = functools.partial(report, service.client, device_id, deployment_id, status)
                cuts += await _until(call, 204)
            return cuts

        # Twenty consecutive writes or commits, whichever requests they belong to, are cut.
        cut = ["insert", "update", "commitTransaction"]
        async with failing_commands(mongo, cut, skip=30, times=20):
            cuts = await asyncio.gather(*(device(d) for d in devices))
        assert sum(cuts) == 20
        statuses = await _device_statuses(service.client, deployment_id)
        assert statuses == dict.fromkeys(devices, "success")
        assert await stats_of(service.client, deployment_id) == _stats(success=len(devices))
        finished = await _deployment(service.client, deployment_id)
        assert finished["status"] == "finished"
        assert finished["device_count"] == len(devices)
        assert await _last_statuses(service.client, devices) == dict.fromkeys(devices, "success")


class TestRecountAtStart:
    async def test_statistics_an_old_crash_left_wrong_are_recounted(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
        asgi_client: ClientFactory,
    ) -> None:
        devices = [f"dev-{i}" for i in range(4)]
        deployment_id = await _started(service, artifacts_factory, devices)
        for device_id in devices[:3]:
            assert (await poll(service.client, device_id)).status_code == 200
        for device_id in devices[:2]:
            response = await report(service.client, device_id, deployment_id, "downloading")
            assert response.status_code == 204
        db = mongo[service.settings.mongo_db]
        # As an earlier version left it: statuses written whose counts never moved.
        await db["devices"].update_many(
            {"deviceid": {"$in": devices[:2]}},
            {"$set": {"status": int(DeviceDeploymentStatus.SUCCESS), "active": False}},
        )
        await db["deployment_stats"].update_one(
            {"_id": deployment_id}, {"$inc": {"stats.installing": -2, "stats.pending": 2}}
        )
        assert await stats_of(service.client, deployment_id) == _stats(
            pending=4, downloading=2, installing=-2
        )
        truth = _stats(pending=2, success=2)
        async with asgi_client(create_app(service.settings)) as restarted:

            async def recounted() -> bool:
                return await stats_of(restarted, deployment_id) == truth

            await eventually(recounted)
            assert (await _deployment(restarted, deployment_id))["status"] == "inprogress"
            # The counters go on from the truth.
            for device_id in devices[2:]:
                await poll(restarted, device_id)
                response = await report(restarted, device_id, deployment_id, "success")
                assert response.status_code == 204
            assert await stats_of(restarted, deployment_id) == _stats(success=4)
            assert (await _deployment(restarted, deployment_id))["status"] == "finished"


class TestArtifactUpload:
    async def test_cut_at_the_release_write_records_nothing(
        self, service: Service, artifacts_factory: ArtifactFactory, mongo: _Mongo
    ) -> None:
        content = artifacts_factory.make("app-3.0")
        async with failing_commands(mongo, ["update"]):  # the release, after the artifact
            with pytest.raises(OperationFailure, match="failCommand"):
                await service.upload(content)
        listed = await service.client.get(ARTIFACTS, headers=user_headers())
        assert listed.json() == []
        releases = await service.client.get(RELEASES, headers=user_headers())
        assert releases.json() == []
        # The file stays until the storage sweep finds no artifact refers to it.
        assert len(_objects(service)) == 1
        response = await service.upload(content)
        assert response.status_code == 201
        [artifact] = (await service.client.get(ARTIFACTS, headers=user_headers())).json()
        [release] = (await service.client.get(RELEASES, headers=user_headers())).json()
        assert release["name"] == "app-3.0"
        assert [a["id"] for a in release["artifacts"]] == [artifact["id"]]

    async def test_cut_at_the_release_write_deletes_nothing(
        self, service: Service, artifacts_factory: ArtifactFactory, mongo: _Mongo
    ) -> None:
        assert (await service.upload(artifacts_factory.make("app-3.0"))).status_code == 201
        [artifact] = (await service.client.get(ARTIFACTS, headers=user_headers())).json()
        url = f"{ARTIFACTS}/{artifact['id']}"
        async with failing_commands(mongo, ["update"]):  # the release, after the artifact
            with pytest.raises(OperationFailure, match="failCommand"):
                await service.client.delete(url, headers=user_headers())
        assert (await service.client.get(url, headers=user_headers())).status_code == 200
        [release] = (await service.client.get(RELEASES, headers=user_headers())).json()
        assert release["artifacts_count"] == 1
        assert len(_objects(service)) == 1
        assert (await service.client.delete(url, headers=user_headers())).status_code == 204
        assert (await service.client.get(url, headers=user_headers())).status_code == 404
        assert (await service.client.get(RELEASES, headers=user_headers())).json() == []
        assert _objects(service) == []
