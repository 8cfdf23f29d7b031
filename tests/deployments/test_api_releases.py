"""Releases (v1 and v2) and v1alpha1 software."""

from __future__ import annotations

from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.deployments.conftest import Service
from tests.deployments.flows import create_deployment
from tests.deployments.helpers import ArtifactFactory, user_headers

V1 = "/api/management/v1/deployments/deployments/releases"
V2 = "/api/management/v2/deployments/deployments/releases"
ALL = "/api/management/v2/deployments/releases/all"
SOFTWARE = "/api/management/v1alpha1/deployments/software"


async def _two_releases(service: Service, factory: ArtifactFactory) -> None:
    await service.upload(factory.make("app-1.0", ["board-a"]), description="Stable build")
    await service.upload(factory.make("app-1.0", ["board-b"]), description="stable too")
    await service.upload(factory.make("tool-2.0", ["board-b"]), description="nightly")


class TestReleasesV1:
    async def test_unpaged(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        response = await service.client.get(V1, headers=user_headers())
        assert response.status_code == 200
        releases = response.json()
        assert [r["Name"] for r in releases] == ["app-1.0", "tool-2.0"]
        assert releases[0]["ArtifactsCount"] == 2
        assert {a["device_types_compatible"][0] for a in releases[0]["Artifacts"]} == {
            "board-a",
            "board-b",
        }
        assert releases[0]["tags"] == []
        assert releases[0]["notes"] == ""
        for query, expected in [
            ("name=APP", ["app-1.0"]),
            ("description=nightly", ["tool-2.0"]),
            ("device_type=board-a", ["app-1.0"]),
            ("device_type=board-b", ["app-1.0", "tool-2.0"]),
            ("update_type=single-file", ["app-1.0", "tool-2.0"]),
            ("update_type=rootfs-image", []),
        ]:
            got = await service.client.get(f"{V1}?{query}", headers=user_headers())
            assert [r["Name"] for r in got.json()] == expected, query

    async def test_paged(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        response = await service.client.get(
            f"{V1}/list?per_page=1&sort=artifacts_count:desc", headers=user_headers()
        )
        assert [r["Name"] for r in response.json()] == ["app-1.0"]
        assert response.headers["X-Total-Count"] == "2"
        bad = await service.client.get(f"{V1}/list?sort=size:asc", headers=user_headers())
        assert bad.status_code == 400


class TestReleasesV2:
    async def test_list_and_get(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        response = await service.client.get(V2, headers=user_headers())
        assert response.status_code == 200
        releases = response.json()
        assert [r["name"] for r in releases] == ["app-1.0", "tool-2.0"]
        assert releases[0]["artifacts_count"] == 2
        assert len(releases[0]["artifacts"]) == 2
        assert response.headers["X-Total-Count"] == "2"
        newest = await service.client.get(f"{V2}?sort=modified:desc", headers=user_headers())
        assert [r["name"] for r in newest.json()] == ["tool-2.0", "app-1.0"]
        one = await service.client.get(f"{V2}/app-1.0", headers=user_headers())
        assert one.status_code == 200
        assert one.json()["name"] == "app-1.0"
        missing = await service.client.get(f"{V2}/nope", headers=user_headers())
        assert missing.status_code == 404

    async def test_notes(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        ok = await service.client.patch(
            f"{V2}/app-1.0", json={"notes": "Fixes boot loop"}, headers=user_headers()
        )
        assert ok.status_code == 204
        shown = await service.client.get(f"{V2}/app-1.0", headers=user_headers())
        assert shown.json()["notes"] == "Fixes boot loop"
        too_long = await service.client.patch(
            f"{V2}/app-1.0", json={"notes": "x" * 1025}, headers=user_headers()
        )
        assert too_long.status_code == 400
        wrong_type = await service.client.patch(
            f"{V2}/app-1.0", json={"notes": 42}, headers=user_headers()
        )
        assert wrong_type.status_code == 400
        unknown = await service.client.patch(
            f"{V2}/nope", json={"notes": "x"}, headers=user_headers()
        )
        assert unknown.status_code == 404

    async def test_tags(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        response = await service.client.put(
            f"{V2}/app-1.0/tags", json=["Prod", "prod", "EU-west"], headers=user_headers()
        )
        assert response.status_code == 204
        shown = await service.client.get(f"{V2}/app-1.0", headers=user_headers())
        assert shown.json()["tags"] == ["prod", "eu-west"]
        await service.client.put(f"{V2}/tool-2.0/tags", json=["beta"], headers=user_headers())
        tagged = await service.client.get(f"{V2}?tag=BETA&tag=nothing", headers=user_headers())
        assert [r["name"] for r in tagged.json()] == ["tool-2.0"]
        listed = await service.client.get(f"{ALL}/tags", headers=user_headers())
        assert listed.json() == ["beta", "eu-west", "prod"]
        for body in (["x"] * 0 + [f"t{i}" for i in range(21)], ["bad tag"], "prod", [3]):
            bad = await service.client.put(f"{V2}/app-1.0/tags", json=body, headers=user_headers())
            assert bad.status_code == 400, body
            assert bad.json()["error"]
        unknown = await service.client.put(f"{V2}/nope/tags", json=["a"], headers=user_headers())
        assert unknown.status_code == 404

    async def test_unique_tag_limit(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        names = [f"rel-{i}" for i in range(6)]
        for name in names:
            await service.upload(artifacts_factory.make(name))
        for index, name in enumerate(names[:5]):
            tags = [f"tag-{index}-{j}" for j in range(20)]
            response = await service.client.put(
                f"{V2}/{name}/tags", json=tags, headers=user_headers()
            )
            assert response.status_code == 204
        over = await service.client.put(
            f"{V2}/{names[5]}/tags", json=["one-more"], headers=user_headers()
        )
        assert over.status_code == 409
        assert over.json()["error"] == "the total number of unique tags has been exceeded"
        # Replacing a release's own tags within the limit is fine.
        same = await service.client.put(
            f"{V2}/{names[0]}/tags", json=[f"tag-0-{j}" for j in range(19)], headers=user_headers()
        )
        assert same.status_code == 204

    async def test_update_types(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        response = await service.client.get(f"{ALL}/types", headers=user_headers())
        assert response.json() == ["single-file"]

    async def test_delete(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        await _two_releases(service, artifacts_factory)
        deployment_id = await create_deployment(
            service.client, name="d", artifact_name="tool-2.0", devices=["x"]
        )
        blocked = await service.client.delete(
            f"{V2}?name=tool-2.0&name=app-1.0", headers=user_headers()
        )
        assert blocked.status_code == 409
        assert blocked.json()["active_deployments"] == [deployment_id]
        assert blocked.json()["error"] == "release(s) used in active deployment"
        assert blocked.json()["request_id"] == blocked.headers["X-MEN-RequestID"]
        deleted = await service.client.delete(f"{V2}?name=app-1.0", headers=user_headers())
        assert deleted.status_code == 204
        remaining = await service.client.get(V2, headers=user_headers())
        assert [r["name"] for r in remaining.json()] == ["tool-2.0"]
        images = await mongo[service.settings.mongo_db]["images"].find({"tenant_id": ""}).to_list()
        assert [i["meta_artifact"]["name"] for i in images] == ["tool-2.0"]
        files = [p for p in service.settings.storage_path.rglob("*") if p.is_file()]
        assert len(files) == 1
        missing = await service.client.delete(V2, headers=user_headers())
        assert missing.status_code == 400


class TestSoftware:
    async def test_list(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        await service.client.put(f"{V2}/tool-2.0/tags", json=["beta"], headers=user_headers())
        response = await service.client.get(SOFTWARE, headers=user_headers())
        assert response.status_code == 200
        body = response.json()
        assert [s["name"] for s in body] == ["app-1.0", "tool-2.0"]
        assert body[0]["kind"] == "release"
        assert sorted(body[0]["compatible_types"]) == ["board-a", "board-b"]
        assert response.headers["X-Total-Count"] == "2"
        for query, expected in [
            ("name_prefix=tool", ["tool-2.0"]),
            ("name=app-1.0&name=tool-2.0", ["app-1.0", "tool-2.0"]),
            ("tag=beta", ["tool-2.0"]),
            ("kind=manifest", []),
            ("sort=name:desc", ["tool-2.0", "app-1.0"]),
        ]:
            got = await service.client.get(f"{SOFTWARE}?{query}", headers=user_headers())
            assert [s["name"] for s in got.json()] == expected, query
        for query in ("name=a&name_prefix=b", "kind=firmware", "sort=bogus", "per_page=0"):
            bad = await service.client.get(f"{SOFTWARE}?{query}", headers=user_headers())
            assert bad.status_code == 400, query

    async def test_tags(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await _two_releases(service, artifacts_factory)
        await service.client.put(f"{V2}/app-1.0/tags", json=["lts"], headers=user_headers())
        assert (await service.client.get(f"{SOFTWARE}/tags", headers=user_headers())).json() == [
            "lts"
        ]
        manifests = await service.client.get(
            f"{SOFTWARE}/tags?kind=manifest", headers=user_headers()
        )
        assert manifests.json() == []
