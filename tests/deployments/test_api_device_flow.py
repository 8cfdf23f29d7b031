"""The device side: `next` selection, status reports, statistics, logs, decommissioning."""

from __future__ import annotations

import asyncio
import uuid

from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.deployments.conftest import Service
from tests.deployments.flows import (
    DEPLOYMENTS,
    NEXT_V1,
    NEXT_V2,
    create_deployment,
    poll,
    report,
    stats_of,
)
from tests.deployments.helpers import (
    DEVICE_TYPE,
    ArtifactFactory,
    device_headers,
    user_headers,
)
from tests.toolkit import assert_error

INTERNAL = "/api/internal/v1/deployments"


async def _device_deployment(
    mongo: AsyncMongoClient[Document], service: Service, deployment_id: str, device_id: str
) -> Document:
    doc = await mongo[service.settings.mongo_db]["devices"].find_one(
        {"tenant_id": "", "deploymentid": deployment_id, "deviceid": device_id}
    )
    assert doc is not None
    return doc


async def _deployment(service: Service, deployment_id: str) -> dict[str, object]:
    response = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
    body: dict[str, object] = response.json()
    return body


class TestNext:
    async def test_nothing_to_do(self, service: Service) -> None:
        response = await poll(service.client, "lonely")
        assert response.status_code == 204
        assert response.content == b""

    async def test_instructions(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        data = artifacts_factory.make("app-2.0", payload_size=10_000)
        artifact_id = (await service.upload(data)).headers["Location"].rsplit("/", 1)[1]
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev-1", "dev-2"]
        )
        response = await poll(service.client, "dev-1")
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == deployment_id
        artifact = body["artifact"]
        assert artifact["id"] == artifact_id
        assert artifact["artifact_name"] == "app-2.0"
        assert artifact["device_types_compatible"] == [DEVICE_TYPE]
        assert artifact["source"]["expire"]
        download = await service.client.get(artifact["source"]["uri"])
        assert download.status_code == 200
        assert download.content == data

        doc = await _device_deployment(mongo, service, deployment_id, "dev-1")
        assert doc["status"] == 2304
        assert doc["active"] is True
        assert doc["request"]["device_type"] == DEVICE_TYPE
        shown = await _deployment(service, deployment_id)
        assert shown["device_count"] == 1
        assert shown["status"] == "pending"
        statistics = shown["statistics"]
        assert isinstance(statistics, dict)
        assert statistics["total_size"] == len(data)
        assert statistics["status"]["pending"] == 2

        again = await poll(service.client, "dev-1")
        assert again.json()["id"] == deployment_id
        assert (await _deployment(service, deployment_id))["device_count"] == 1

    async def test_v1_fallbacks(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["v1-post", "v1-get"]
        )
        posted = await service.client.post(
            NEXT_V1,
            json={"artifact_name": "old", "device_type": DEVICE_TYPE, "rootfs-image.x": "1"},
            headers=device_headers("v1-post"),
        )
        assert posted.status_code == 200
        assert posted.json()["id"] == deployment_id
        got = await service.client.get(
            NEXT_V1,
            params={"artifact_name": "old", "device_type": DEVICE_TYPE},
            headers=device_headers("v1-get"),
        )
        assert got.status_code == 200
        assert got.json()["id"] == deployment_id

    async def test_bad_requests(self, service: Service) -> None:
        headers = device_headers("dev")
        cases = [
            await service.client.get(NEXT_V1, headers=headers),
            await service.client.get(NEXT_V1, params={"artifact_name": "a"}, headers=headers),
            await service.client.post(NEXT_V2, json={}, headers=headers),
            await service.client.post(
                NEXT_V2, json={"device_provides": {"device_type": "x"}}, headers=headers
            ),
            await service.client.post(
                NEXT_V2,
                json={"device_provides": {"device_type": "x", "artifact_name": 3}},
                headers=headers,
            ),
            await service.client.post(NEXT_V1, json={"artifact_name": "a"}, headers=headers),
            await service.client.post(
                NEXT_V2, content=b"{", headers={**headers, "Content-Type": "application/json"}
            ),
        ]
        for response in cases:
            assert response.status_code == 400, response.request.content
            assert response.json()["error"]

    async def test_user_token_refused(self, service: Service) -> None:
        response = await service.client.post(
            NEXT_V2,
            json={"device_provides": {"device_type": "x", "artifact_name": "y"}},
            headers=user_headers(),
        )
        assert_error(response, 401, "the token does not belong to a device")

    async def test_device_type_mismatch_is_noartifact(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0", ["other-type"]))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        response = await poll(service.client, "dev")
        assert response.status_code == 204
        stats = await stats_of(service.client, deployment_id)
        assert stats["noartifact"] == 1
        assert stats["pending"] == 0
        shown = await _deployment(service, deployment_id)
        assert shown["status"] == "finished"
        assert shown["device_count"] == 1
        assert (await poll(service.client, "dev")).status_code == 204

    async def test_already_installed(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev", "other"]
        )
        response = await poll(service.client, "dev", artifact_name="app-2.0")
        assert response.status_code == 204
        stats = await stats_of(service.client, deployment_id)
        assert stats["already-installed"] == 1
        assert stats["pending"] == 1
        assert (await _deployment(service, deployment_id))["status"] == "inprogress"

    async def test_force_installation(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client,
            name="x",
            artifact_name="app-2.0",
            devices=["dev"],
            force_installation=True,
        )
        response = await poll(service.client, "dev", artifact_name="app-2.0")
        assert response.status_code == 200
        assert response.json()["id"] == deployment_id

    async def test_smallest_compatible_artifact(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        big = artifacts_factory.make(
            "pick", payload_size=60_000, depends=["rootfs-image.single-file.version:v1"]
        )
        small = artifacts_factory.make(
            "pick", payload_size=100, depends=["rootfs-image.single-file.version:v2"]
        )
        other_type = artifacts_factory.make("pick", ["tiny-board"], payload_size=10)
        await service.upload(big)
        small_id = (await service.upload(small)).headers["Location"].rsplit("/", 1)[1]
        await service.upload(other_type)
        await create_deployment(service.client, name="x", artifact_name="pick", devices=["dev"])
        response = await poll(service.client, "dev")
        assert response.json()["artifact"]["id"] == small_id

    async def test_artifact_uploaded_after_creation(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("late", ["board-a"]))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="late", devices=["dev"]
        )
        late_id = (
            (await service.upload(artifacts_factory.make("late", [DEVICE_TYPE])))
            .headers["Location"]
            .rsplit("/", 1)[1]
        )
        response = await poll(service.client, "dev")
        assert response.json()["id"] == deployment_id
        assert response.json()["artifact"]["id"] == late_id

    async def test_oldest_first_then_next(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        await service.upload(artifacts_factory.make("app-3.0"))
        older = await create_deployment(
            service.client, name="a", artifact_name="app-2.0", devices=["dev"]
        )
        newer = await create_deployment(
            service.client, name="b", artifact_name="app-3.0", devices=["dev"]
        )
        assert (await poll(service.client, "dev")).json()["id"] == older
        assert (await report(service.client, "dev", older, "success")).status_code == 204
        assert (await poll(service.client, "dev", artifact_name="app-2.0")).json()["id"] == newer
        assert (await report(service.client, "dev", newer, "failure")).status_code == 204
        assert (await poll(service.client, "dev", artifact_name="app-2.0")).status_code == 204

    async def test_older_deployment_never_after_newer_finished(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        await service.upload(artifacts_factory.make("app-3.0"))
        older = await create_deployment(
            service.client, name="a", artifact_name="app-2.0", devices=["dev", "x"]
        )
        newer = await create_deployment(
            service.client, name="b", artifact_name="app-3.0", devices=["dev"]
        )
        # The device finishes the newer one first: its part in the older one was aborted.
        assert (await poll(service.client, "dev")).json()["id"] == older
        await service.client.delete(f"{DEPLOYMENTS}/devices/dev", headers=user_headers())
        assert (await poll(service.client, "dev")).json()["id"] == newer
        await report(service.client, "dev", newer, "success")
        # Forgetting the history makes the older, still active deployment eligible again.
        await service.client.delete(f"{DEPLOYMENTS}/devices/dev/history", headers=user_headers())
        response = await poll(service.client, "dev", artifact_name="app-3.0")
        assert response.json()["id"] == older

    async def test_conflicting_request_data(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        assert (await poll(service.client, "dev", artifact_name="one")).status_code == 200
        response = await poll(service.client, "dev", artifact_name="two")
        assert response.status_code == 409
        assert response.json()["error"] == "Device provided conflicting request data"
        assert (await stats_of(service.client, deployment_id))["failure"] == 1

    async def test_tenant_scoping(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"), tenant="t-a")
        deployment_id = await create_deployment(
            service.client, tenant="t-a", name="x", artifact_name="app-2.0", devices=["dev"]
        )
        assert (await poll(service.client, "dev", tenant="t-b")).status_code == 204
        response = await poll(service.client, "dev", tenant="t-a")
        assert response.json()["id"] == deployment_id
        download = await service.client.get(response.json()["artifact"]["source"]["uri"])
        assert download.status_code == 200
        forged = await report(service.client, "dev", deployment_id, "success", tenant="t-b")
        assert forged.status_code == 404


class TestStatusReport:
    async def test_client_sequence(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        await poll(service.client, "dev")
        for status in ("downloading", "downloading", "downloading", "installing"):
            assert (await report(service.client, "dev", deployment_id, status)).status_code == 204
        stats = await stats_of(service.client, deployment_id)
        assert stats["installing"] == 1
        assert stats["pending"] == 0
        assert (await _deployment(service, deployment_id))["status"] == "inprogress"
        doc = await _device_deployment(mongo, service, deployment_id, "dev")
        assert doc["started"] is not None
        assert doc.get("finished") is None
        assert (await report(service.client, "dev", deployment_id, "installing")).status_code == 204
        assert (await report(service.client, "dev", deployment_id, "success")).status_code == 204
        stats = await stats_of(service.client, deployment_id)
        assert stats["success"] == 1
        assert stats["installing"] == 0
        shown = await _deployment(service, deployment_id)
        assert shown["status"] == "finished"
        assert shown["finished"]
        doc = await _device_deployment(mongo, service, deployment_id, "dev")
        assert doc["status"] == 2560
        assert doc["active"] is False
        assert doc["finished"] is not None
        last = await service.client.post(
            f"{INTERNAL}/tenants//devices/deployments/last", json={"device_ids": ["dev", "x"]}
        )
        assert last.status_code == 200
        assert last.json() == {
            "device_deployment_last_statuses": [
                {
                    "device_id": "dev",
                    "deployment_id": deployment_id,
                    "device_deployment_id": doc["_id"],
                    "device_deployment_status": "success",
                }
            ]
        }

    async def test_invalid_statuses(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        await poll(service.client, "dev")
        url = f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status"
        for body in (
            {"status": "pending"},
            {"status": "aborted"},
            {"status": "noartifact"},
            {"status": "exploded"},
            {},
            {"status": 3},
            {"status": "installing", "substate": "x" * 201},
        ):
            response = await service.client.put(url, json=body, headers=device_headers("dev"))
            assert response.status_code == 400, body
            assert response.json()["error"]

    async def test_not_part_of_deployment(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        response = await report(service.client, "stranger", deployment_id, "success")
        assert_error(response, 404, "Resource not found")
        unknown = await report(service.client, "dev", str(uuid.uuid4()), "success")
        assert_error(unknown, 404, "Resource not found")
        stats = await stats_of(service.client, deployment_id)
        assert (stats["pending"], stats["success"]) == (1, 0)

    async def test_pauses_count_as_active(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        await poll(service.client, "dev")
        response = await report(service.client, "dev", deployment_id, "pause_before_installing")
        assert response.status_code == 204
        assert (await stats_of(service.client, deployment_id))["pause_before_installing"] == 1
        assert (await poll(service.client, "dev")).json()["id"] == deployment_id

    async def test_concurrent_reports_keep_statistics_exact(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        devices = [f"fleet-{i:03d}" for i in range(200)]
        deployment_id = await create_deployment(
            service.client, name="fleet", artifact_name="app-2.0", devices=devices
        )

        async def one_device(device_id: str, index: int) -> None:
            assert (await poll(service.client, device_id)).status_code == 200
            for status in ("downloading", "installing"):
                await report(service.client, device_id, deployment_id, status)
            final = "failure" if index % 10 == 0 else "success"
            assert (
                await report(service.client, device_id, deployment_id, final)
            ).status_code == 204

        await asyncio.gather(*(one_device(d, i) for i, d in enumerate(devices)))
        stats = await stats_of(service.client, deployment_id)
        assert stats["success"] == 180
        assert stats["failure"] == 20
        assert sum(stats.values()) == 200
        shown = await _deployment(service, deployment_id)
        assert shown["status"] == "finished"
        assert shown["device_count"] == 200

    async def test_concurrent_same_device_counts_once(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev", "other"]
        )
        await asyncio.gather(*(poll(service.client, "dev") for _ in range(10)))
        await asyncio.gather(
            *(report(service.client, "dev", deployment_id, "downloading") for _ in range(10))
        )
        stats = await stats_of(service.client, deployment_id)
        assert stats["downloading"] == 1
        assert stats["pending"] == 1
        assert (await _deployment(service, deployment_id))["device_count"] == 1


class TestDeploymentLog:
    async def test_upload_and_read(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        await poll(service.client, "dev")
        await report(service.client, "dev", deployment_id, "failure")
        response = await service.client.put(
            f"/api/devices/v1/deployments/device/deployments/{deployment_id}/log",
            json={
                "messages": [
                    {"level": "info", "message": "starting", "timestamp": "2026-01-02T03:04:05Z"},
                    {
                        "level": "error",
                        "message": "exit 3",
                        "timestamp": "2026-01-02T04:04:06.25+01:00",
                    },
                ]
            },
            headers=device_headers("dev"),
        )
        assert response.status_code == 204
        log = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/devices/dev/log", headers=user_headers()
        )
        assert log.status_code == 200
        assert log.headers["Content-Type"].startswith("text/plain")
        assert log.text == (
            "2026-01-02 03:04:05 +0000 UTC info: starting\n"
            "2026-01-02 03:04:06.25 +0000 UTC error: exit 3\n"
        )
        devices = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/devices", headers=user_headers()
        )
        assert devices.json()[0]["log"] is True

    async def test_errors(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        await poll(service.client, "dev")
        url = f"/api/devices/v1/deployments/device/deployments/{deployment_id}/log"
        at = "2026-01-01T00:00:00Z"
        for body, message in (
            ({}, "messages"),
            ({"messages": []}, "messages: cannot be blank"),
            ({"messages": [{"level": "info"}]}, "messages.0.message"),
            (
                {"messages": [{"level": "i", "message": "m", "timestamp": "yesterday"}]},
                "messages.0.timestamp",
            ),
            ({"messages": [{"level": "", "message": "m", "timestamp": at}]}, "messages.0.level"),
        ):
            response = await service.client.put(url, json=body, headers=device_headers("dev"))
            assert_error(response, 400, message)
        good = {"messages": [{"level": "i", "message": "m", "timestamp": at}]}
        stranger = await service.client.put(url, json=good, headers=device_headers("stranger"))
        assert_error(stranger, 404, "Deployment not found")
        # Nothing was stored by any of the refused requests.
        missing = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/devices/dev/log", headers=user_headers()
        )
        assert_error(missing, 404, "Resource not found")


class TestDecommission:
    async def test_active_and_pending_become_decommissioned(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        await service.upload(artifacts_factory.make("app-3.0"))
        first = await create_deployment(
            service.client, name="a", artifact_name="app-2.0", devices=["gone", "stays"]
        )
        second = await create_deployment(
            service.client, name="b", artifact_name="app-3.0", devices=["gone"]
        )
        await poll(service.client, "gone")
        await report(service.client, "gone", first, "downloading")
        url = f"{INTERNAL}/tenants//deployments/devices/gone"
        assert (await service.client.delete(url)).status_code == 204
        first_stats = await stats_of(service.client, first)
        assert first_stats["decommissioned"] == 1
        assert first_stats["downloading"] == 0
        second_stats = await stats_of(service.client, second)
        assert second_stats["decommissioned"] == 1
        assert second_stats["pending"] == 0
        assert (await _deployment(service, second))["status"] == "finished"
        conflict = await report(service.client, "gone", first, "success")
        assert conflict.status_code == 409
        assert conflict.json()["error"] == "Device decommissioned"
        # Idempotent.
        assert (await service.client.delete(url)).status_code == 204
        assert (await stats_of(service.client, second))["decommissioned"] == 1
        assert (await poll(service.client, "gone")).status_code == 204

    async def test_tenant_path(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("app-2.0"), tenant="t9")
        deployment_id = await create_deployment(
            service.client, tenant="t9", name="a", artifact_name="app-2.0", devices=["dev"]
        )
        assert (
            await service.client.delete(f"{INTERNAL}/tenants/t9/deployments/devices/dev")
        ).status_code == 204
        assert (await stats_of(service.client, deployment_id, "t9"))["decommissioned"] == 1


class TestInternalReads:
    async def test_deployments_and_history(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"), tenant="t1")
        deployment_id = await create_deployment(
            service.client, tenant="t1", name="a", artifact_name="app-2.0", devices=["dev"]
        )
        listed = await service.client.get(f"{INTERNAL}/tenants/t1/deployments")
        assert [d["id"] for d in listed.json()] == [deployment_id]
        assert listed.headers["X-Total-Count"] == "1"
        assert (await service.client.get(f"{INTERNAL}/tenants//deployments")).json() == []
        await poll(service.client, "dev", tenant="t1")
        history = await service.client.get(f"{INTERNAL}/tenants/t1/deployments/devices/dev")
        entries = history.json()
        assert [e["deployment"]["id"] for e in entries] == [deployment_id]
        by_ids = await service.client.get(
            f"{INTERNAL}/tenants/t1/deployments/devices", params={"id": entries[0]["id"]}
        )
        assert [e["id"] for e in by_ids.json()] == [entries[0]["id"]]
        missing_ids = await service.client.get(f"{INTERNAL}/tenants/t1/deployments/devices")
        assert missing_ids.status_code == 400

    async def test_last_status_bad_body(self, service: Service) -> None:
        url = f"{INTERNAL}/tenants//devices/deployments/last"
        assert_error(await service.client.post(url, json={}), 400, "device_ids")
        assert_error(await service.client.post(url, json={"device_ids": "x"}), 400, "device_ids")
        assert_error(await service.client.post(url, content=b"{"), 400, "invalid request")

    async def test_provision_and_settings(self, service: Service) -> None:
        assert (
            await service.client.post(f"{INTERNAL}/tenants", json={"tenant_id": "abc"})
        ).status_code == 201
        assert (await service.client.post(f"{INTERNAL}/tenants", json={})).status_code == 400
        url = f"{INTERNAL}/tenants/abc/storage/settings"
        assert (await service.client.get(url)).json() == {}
        settings = {"bucket": "b", "key": "k", "secret": "s", "region": "eu-west-1"}
        assert (await service.client.put(url, json=settings)).status_code == 204
        assert (await service.client.get(url)).json() == settings
        assert (await service.client.put(url, json={"bucket": "b"})).status_code == 400
        clear = await service.client.put(
            url, content=b"null", headers={"Content-Type": "application/json"}
        )
        assert clear.status_code == 204
        assert (await service.client.get(url)).json() == {}
