"""Deployments through the management API: creation, reads, lists, abort, history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.deployments.conftest import Service
from tests.deployments.flows import DEPLOYMENTS, create_deployment, poll, report, stats_of
from tests.deployments.helpers import ArtifactFactory, FakeInventory, user_headers
from tests.toolkit import assert_error

ALL_STATS = {
    "failure",
    "aborted",
    "pause_before_installing",
    "pause_before_committing",
    "pause_before_rebooting",
    "downloading",
    "installing",
    "rebooting",
    "pending",
    "success",
    "noartifact",
    "already-installed",
    "decommissioned",
}


async def _deployment_doc(
    mongo: AsyncMongoClient[Document], service: Service, deployment_id: str, tenant: str = ""
) -> Document:
    doc = await mongo[service.settings.mongo_db]["deployments"].find_one(
        {"tenant_id": tenant, "_id": deployment_id}
    )
    assert doc is not None
    return doc


async def _deployments(mongo: AsyncMongoClient[Document], service: Service) -> list[Document]:
    return await mongo[service.settings.mongo_db]["deployments"].find({}).to_list()


class TestCreateDeployment:
    async def test_created_for_devices(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        response = await service.client.post(
            DEPLOYMENTS,
            json={"name": "rollout", "artifact_name": "app-2.0", "devices": ["d1", "d2", "d1"]},
            headers=user_headers(),
        )
        assert response.status_code == 201
        deployment_id = response.headers["Location"].rsplit("/", 1)[1]
        assert response.headers["Location"] == f"{DEPLOYMENTS}/{deployment_id}"
        doc = await _deployment_doc(mongo, service, deployment_id)
        assert doc["device_list"] == ["d1", "d2"]
        assert doc["max_devices"] == 2
        counters = await mongo[service.settings.mongo_db]["deployment_stats"].find_one(
            {"tenant_id": "", "_id": deployment_id}
        )
        assert counters is not None
        assert counters["stats"]["pending"] == 2
        assert set(counters["stats"]) == ALL_STATS
        assert doc["status"] == "pending"
        assert doc["active"] is True

        shown = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert shown.status_code == 200
        body = shown.json()
        assert body["name"] == "rollout"
        assert body["artifact_name"] == "app-2.0"
        assert body["status"] == "pending"
        assert body["type"] == "software"
        assert body["device_count"] == 0
        assert body["max_devices"] == 2
        assert len(body["artifacts"]) == 1
        assert body["statistics"]["status"]["pending"] == 2
        assert body["statistics"]["total_size"] == 0
        assert "finished" not in body

    async def test_no_artifact(self, service: Service) -> None:
        response = await service.client.post(
            DEPLOYMENTS,
            json={"name": "x", "artifact_name": "missing", "devices": ["d1"]},
            headers=user_headers(),
        )
        assert response.status_code == 422
        assert response.json()["error"] == "No artifact for the deployment"

    async def test_bad_bodies(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("app"))
        bodies: list[object] = [
            {"artifact_name": "app", "devices": ["d"]},
            {"name": "", "artifact_name": "app", "devices": ["d"]},
            {"name": "x", "artifact_name": "app"},
            {"name": "x", "artifact_name": "app", "devices": []},
            {"name": "x", "artifact_name": "app", "devices": ["d"], "all_devices": True},
            {"name": "x", "artifact_name": "app", "devices": "d"},
            {"name": 5, "artifact_name": "app", "devices": ["d"]},
            {"name": "x", "artifact_name": "app", "devices": [""]},
            [],
        ]
        for body in bodies:
            response = await service.client.post(DEPLOYMENTS, json=body, headers=user_headers())
            assert response.status_code == 400, body
            assert response.json()["error"]
        broken = await service.client.post(
            DEPLOYMENTS,
            content=b'{"name": ',
            headers={"Content-Type": "application/json", **user_headers()},
        )
        assert broken.status_code == 400
        assert broken.json()["error"].startswith("failed to decode request body")

    async def test_duplicate_active(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app"))
        body = {"name": "same", "artifact_name": "app", "devices": ["d1"]}
        assert (
            await service.client.post(DEPLOYMENTS, json=body, headers=user_headers())
        ).status_code == 201
        again = await service.client.post(DEPLOYMENTS, json=body, headers=user_headers())
        assert again.status_code == 409
        assert "already an active deployment" in again.json()["error"]

    async def test_all_devices(
        self,
        service: Service,
        inventory: FakeInventory,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await service.upload(artifacts_factory.make("app"))
        inventory.add("acc-1")
        inventory.add("acc-2", groups=["g"])
        inventory.add("pend-1", status="pending")
        deployment_id = await create_deployment(
            service.client, name="all", artifact_name="app", all_devices=True
        )
        doc = await _deployment_doc(mongo, service, deployment_id)
        assert sorted(doc["device_list"]) == ["acc-1", "acc-2"]
        assert doc["max_devices"] == 2
        tenant, search = inventory.searches[0]
        assert tenant == ""
        assert search["per_page"] == 500
        assert {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"} in (
            search["filters"]
        )

    async def test_all_devices_none_accepted(
        self, service: Service, inventory: FakeInventory, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app"))
        inventory.add("p", status="pending")
        response = await service.client.post(
            DEPLOYMENTS,
            json={"name": "all", "artifact_name": "app", "all_devices": True},
            headers=user_headers(),
        )
        assert response.status_code == 400
        assert response.json()["error"] == "No devices for the deployment"

    async def test_many_devices_paged_from_inventory(
        self, service: Service, inventory: FakeInventory, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app"))
        for i in range(1203):
            inventory.add(f"dev-{i:05d}")
        deployment_id = await create_deployment(
            service.client, name="big", artifact_name="app", all_devices=True
        )
        ids = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/device_list", headers=user_headers()
        )
        assert len(ids.json()) == 1203
        assert [s[1]["page"] for s in inventory.searches] == [1, 2, 3]

    async def test_single_device_records_groups(
        self,
        service: Service,
        inventory: FakeInventory,
        artifacts_factory: ArtifactFactory,
    ) -> None:
        await service.upload(artifacts_factory.make("app"))
        inventory.add("solo", groups=["lab"])
        deployment_id = await create_deployment(
            service.client, name="one", artifact_name="app", devices=["solo"]
        )
        shown = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert shown.json()["groups"] == ["lab"]

    async def test_tenant_in_inventory_path(
        self, service: Service, inventory: FakeInventory, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app"), tenant="t-1")
        inventory.add("x", tenant="t-1")
        inventory.add("y", tenant="t-2")
        deployment_id = await create_deployment(
            service.client, tenant="t-1", name="n", artifact_name="app", all_devices=True
        )
        ids = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/device_list", headers=user_headers("t-1")
        )
        assert ids.json() == ["x"]
        other = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers("t-2")
        )
        assert other.status_code == 404


class TestCreateGroupDeployment:
    async def test_group(
        self,
        service: Service,
        inventory: FakeInventory,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await service.upload(artifacts_factory.make("app"))
        inventory.add("in-1", groups=["prod"])
        inventory.add("in-2", groups=["prod"])
        inventory.add("out", groups=["test"])
        inventory.add("in-pending", groups=["prod"], status="pending")
        response = await service.client.post(
            f"{DEPLOYMENTS}/group/prod",
            json={"name": "prod rollout", "artifact_name": "app"},
            headers=user_headers(),
        )
        assert response.status_code == 201
        deployment_id = response.headers["Location"].rsplit("/", 1)[1]
        doc = await _deployment_doc(mongo, service, deployment_id)
        assert sorted(doc["device_list"]) == ["in-1", "in-2"]
        assert doc["groups"] == ["prod"]
        assert doc["filter"]["terms"][0]["value"] == "prod"

    async def test_empty_group(
        self,
        service: Service,
        inventory: FakeInventory,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await service.upload(artifacts_factory.make("app"))
        response = await service.client.post(
            f"{DEPLOYMENTS}/group/nobody",
            json={"name": "x", "artifact_name": "app"},
            headers=user_headers(),
        )
        assert_error(response, 400, "No devices for the deployment")
        assert await _deployments(mongo, service) == []

    async def test_no_artifact(
        self, service: Service, inventory: FakeInventory, mongo: AsyncMongoClient[Document]
    ) -> None:
        inventory.add("a", groups=["g"])
        response = await service.client.post(
            f"{DEPLOYMENTS}/group/g",
            json={"name": "x", "artifact_name": "nope"},
            headers=user_headers(),
        )
        assert_error(response, 422, "No artifact for the deployment")
        assert await _deployments(mongo, service) == []


class TestShowDeployment:
    async def test_not_found(self, service: Service) -> None:
        response = await service.client.get(f"{DEPLOYMENTS}/{uuid.uuid4()}", headers=user_headers())
        assert_error(response, 404, "Resource not found")

    async def test_bad_id(self, service: Service) -> None:
        response = await service.client.get(f"{DEPLOYMENTS}/not-a-uuid", headers=user_headers())
        assert_error(response, 400, "ID is not a valid UUID")


class TestListDeployments:
    async def _three(self, service: Service, artifacts_factory: ArtifactFactory) -> list[str]:
        await service.upload(artifacts_factory.make("app-1.0"))
        await service.upload(artifacts_factory.make("tools-2.0"))
        return [
            await create_deployment(
                service.client, name="Spring rollout", artifact_name="app-1.0", devices=["a"]
            ),
            await create_deployment(
                service.client, name="hotfix", artifact_name="tools-2.0", devices=["b"]
            ),
            await create_deployment(
                service.client, name="autumn rollout", artifact_name="tools-2.0", devices=["c"]
            ),
        ]

    async def test_filters_and_paging(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        ids = await self._three(service, artifacts_factory)
        listed = await service.client.get(DEPLOYMENTS, headers=user_headers())
        assert [d["id"] for d in listed.json()] == list(reversed(ids))
        assert listed.headers["X-Total-Count"] == "3"
        ascending = await service.client.get(f"{DEPLOYMENTS}?sort=asc", headers=user_headers())
        assert [d["id"] for d in ascending.json()] == ids
        for search, expected in [
            ("rollout", [ids[2], ids[0]]),
            ("ROLLOUT spring", [ids[0]]),
            ("tools", [ids[2], ids[1]]),
            ("tools-2.0", [ids[2], ids[1]]),
            ("nothing", []),
        ]:
            got = await service.client.get(
                DEPLOYMENTS, params={"search": search}, headers=user_headers()
            )
            assert [d["id"] for d in got.json()] == expected, search
        page = await service.client.get(f"{DEPLOYMENTS}?per_page=1&page=2", headers=user_headers())
        assert [d["id"] for d in page.json()] == [ids[1]]
        assert page.headers["X-Total-Count"] == "3"
        assert 'rel="next"' in page.headers["Link"]
        assert 'rel="prev"' in page.headers["Link"]
        past = await service.client.get(f"{DEPLOYMENTS}?per_page=2&page=9", headers=user_headers())
        assert past.json() == []
        assert past.headers["X-Total-Count"] == "3"

    async def test_status_and_time(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        ids = await self._three(service, artifacts_factory)
        await service.client.put(
            f"{DEPLOYMENTS}/{ids[1]}/status", json={"status": "aborted"}, headers=user_headers()
        )
        finished = await service.client.get(
            f"{DEPLOYMENTS}?status=finished", headers=user_headers()
        )
        assert [d["id"] for d in finished.json()] == [ids[1]]
        pending = await service.client.get(f"{DEPLOYMENTS}?status=pending", headers=user_headers())
        assert sorted(d["id"] for d in pending.json()) == sorted([ids[0], ids[2]])
        now = int(datetime.now(UTC).timestamp())
        later = await service.client.get(
            f"{DEPLOYMENTS}?created_after={now + 3600}", headers=user_headers()
        )
        assert later.json() == []
        before = await service.client.get(
            f"{DEPLOYMENTS}?created_before={now + 3600}", headers=user_headers()
        )
        assert len(before.json()) == 3

    async def test_bad_queries(self, service: Service) -> None:
        for query in (
            "status=bogus",
            "sort=sideways",
            "created_before=yesterday",
            "created_after=1.5",
            "per_page=501",
            "page=0",
            "type=firmware",
        ):
            response = await service.client.get(f"{DEPLOYMENTS}?{query}", headers=user_headers())
            assert response.status_code == 400, query
            assert response.json()["error"]

    async def test_v2(
        self, service: Service, inventory: FakeInventory, artifacts_factory: ArtifactFactory
    ) -> None:
        ids = await self._three(service, artifacts_factory)
        v2 = "/api/management/v2/deployments/deployments"
        by_name = await service.client.get(
            v2, params=[("name", "hotfix"), ("name", "Spring rollout")], headers=user_headers()
        )
        assert sorted(d["id"] for d in by_name.json()) == sorted([ids[0], ids[1]])
        assert by_name.headers["X-Total-Count"] == "2"
        by_id = await service.client.get(v2, params={"id": ids[2]}, headers=user_headers())
        assert [d["id"] for d in by_id.json()] == [ids[2]]
        inventory.add("c")
        inventory.devices[""]["c"]["attributes"]["serial"] = "SN-42"
        fallback = await service.client.get(
            v2, params={"name": "SN-42", "id_attribute": "serial"}, headers=user_headers()
        )
        assert [d["id"] for d in fallback.json()] == [ids[2]]
        assert (
            await service.client.get(f"{v2}?per_page=1000", headers=user_headers())
        ).status_code == 400


class TestAbortDeployment:
    async def test_abort(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["d1", "d2", "d3"]
        )
        assert (await poll(service.client, "d1")).status_code == 200
        assert (await poll(service.client, "d2")).status_code == 200
        assert (await report(service.client, "d2", deployment_id, "success")).status_code == 204
        response = await service.client.put(
            f"{DEPLOYMENTS}/{deployment_id}/status",
            json={"status": "aborted"},
            headers=user_headers(),
        )
        assert response.status_code == 204
        shown = (
            await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        ).json()
        assert shown["status"] == "finished"
        assert shown["finished"]
        stats = await stats_of(service.client, deployment_id)
        assert stats["aborted"] == 1
        assert stats["success"] == 1
        assert stats["pending"] == 0
        # The device still working on it learns of the abort; the one never asked gets nothing.
        assert (await report(service.client, "d1", deployment_id, "installing")).status_code == 409
        assert (await poll(service.client, "d3")).status_code == 204
        again = await service.client.put(
            f"{DEPLOYMENTS}/{deployment_id}/status",
            json={"status": "aborted"},
            headers=user_headers(),
        )
        assert again.status_code == 422
        assert again.json()["error"] == "Deployment already finished"

    async def test_bad_status(self, service: Service) -> None:
        url = f"{DEPLOYMENTS}/{uuid.uuid4()}/status"
        response = await service.client.put(url, json={"status": "paused"}, headers=user_headers())
        assert_error(response, 400, "Unexpected deployment status")
        missing = await service.client.put(url, json={}, headers=user_headers())
        assert_error(missing, 400, "status")

    async def test_not_found(self, service: Service) -> None:
        response = await service.client.put(
            f"{DEPLOYMENTS}/{uuid.uuid4()}/status",
            json={"status": "aborted"},
            headers=user_headers(),
        )
        assert_error(response, 404, "Resource not found")


class TestStatistics:
    async def test_list(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("app"))
        first = await create_deployment(
            service.client, name="a", artifact_name="app", devices=["1"]
        )
        second = await create_deployment(
            service.client, name="b", artifact_name="app", devices=["2", "3"]
        )
        url = f"{DEPLOYMENTS}/statistics/list"
        response = await service.client.post(
            url, json={"deployment_ids": [first, second]}, headers=user_headers()
        )
        assert response.status_code == 200
        body = response.json()
        assert [item["id"] for item in body] == [first, second]
        assert body[1]["stats"]["pending"] == 2
        assert set(body[0]["stats"]) == ALL_STATS
        empty = await service.client.post(url, json={"deployment_ids": []}, headers=user_headers())
        assert empty.json() == {}
        missing = await service.client.post(
            url, json={"deployment_ids": [str(uuid.uuid4())]}, headers=user_headers()
        )
        assert missing.status_code == 404
        bad = await service.client.post(
            url, json={"deployment_ids": ["nope"]}, headers=user_headers()
        )
        assert bad.status_code == 400
        wrong_type = await service.client.post(
            url, json={"deployment_ids": "x"}, headers=user_headers()
        )
        assert wrong_type.status_code == 400

    async def test_single(self, service: Service) -> None:
        response = await service.client.get(
            f"{DEPLOYMENTS}/{uuid.uuid4()}/statistics", headers=user_headers()
        )
        assert_error(response, 404, "Resource not found")


class TestDeploymentDevices:
    async def test_lists(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["d1", "d2", "d3"]
        )
        await poll(service.client, "d1")
        await poll(service.client, "d2")
        await report(service.client, "d2", deployment_id, "downloading")
        everything = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/devices", headers=user_headers()
        )
        assert everything.status_code == 200
        devices = {d["id"]: d for d in everything.json()}
        assert set(devices) == {"d1", "d2"}
        assert devices["d2"]["status"] == "downloading"
        assert devices["d1"]["status"] == "pending"
        assert devices["d1"]["device_type"] == "test-device"
        assert devices["d1"]["log"] is False
        assert devices["d1"]["image"]["meta_artifact"]["name"] == "app-2.0"
        paged = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/devices/list?status=downloading",
            headers=user_headers(),
        )
        assert [d["id"] for d in paged.json()] == ["d2"]
        assert paged.headers["X-Total-Count"] == "1"
        active = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/devices/list?status=active&per_page=1",
            headers=user_headers(),
        )
        assert len(active.json()) == 1
        assert active.headers["X-Total-Count"] == "2"
        bad = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/devices/list?status=sleeping", headers=user_headers()
        )
        assert bad.status_code == 400
        ids = await service.client.get(
            f"{DEPLOYMENTS}/{deployment_id}/device_list", headers=user_headers()
        )
        assert ids.json() == ["d1", "d2", "d3"]

    async def test_unknown_deployment(self, service: Service) -> None:
        for suffix, message in (
            ("devices", "Deployment not found"),
            ("devices/list", "Deployment not found"),
            ("device_list", "Resource not found"),
        ):
            response = await service.client.get(
                f"{DEPLOYMENTS}/{uuid.uuid4()}/{suffix}", headers=user_headers()
            )
            assert_error(response, 404, message)


class TestDeviceHistory:
    async def test_history_and_reset(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        await service.upload(artifacts_factory.make("app-3.0"))
        first = await create_deployment(
            service.client, name="one", artifact_name="app-2.0", devices=["dev"]
        )
        second = await create_deployment(
            service.client, name="two", artifact_name="app-3.0", devices=["dev"]
        )
        assert (await poll(service.client, "dev")).json()["id"] == first
        await report(service.client, "dev", first, "success")
        assert (await poll(service.client, "dev", artifact_name="app-2.0")).json()["id"] == second
        history = await service.client.get(f"{DEPLOYMENTS}/devices/dev", headers=user_headers())
        assert history.status_code == 200
        entries = history.json()
        assert [e["deployment"]["id"] for e in entries] == [second, first]
        assert entries[1]["device"]["status"] == "success"
        assert entries[1]["device"]["id"] == "dev"
        assert history.headers["X-Total-Count"] == "2"
        filtered = await service.client.get(
            f"{DEPLOYMENTS}/devices/dev?status=finished", headers=user_headers()
        )
        assert [e["deployment"]["id"] for e in filtered.json()] == [first]
        too_big = await service.client.get(
            f"{DEPLOYMENTS}/devices/dev?per_page=21", headers=user_headers()
        )
        assert too_big.status_code == 400

        await report(service.client, "dev", second, "success")
        reset = await service.client.delete(
            f"{DEPLOYMENTS}/devices/dev/history", headers=user_headers()
        )
        assert reset.status_code == 204
        remaining = await service.client.get(f"{DEPLOYMENTS}/devices/dev", headers=user_headers())
        assert remaining.json() == []

    async def test_abort_for_device(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev", "other"]
        )
        await poll(service.client, "dev")
        response = await service.client.delete(f"{DEPLOYMENTS}/devices/dev", headers=user_headers())
        assert response.status_code == 204
        stats = await stats_of(service.client, deployment_id)
        assert stats["aborted"] == 1
        assert stats["pending"] == 1
        assert (await report(service.client, "dev", deployment_id, "installing")).status_code == 409
        nothing = await service.client.delete(
            f"{DEPLOYMENTS}/devices/unknown", headers=user_headers()
        )
        assert nothing.status_code == 204
