"""Artifacts through the management API: upload, lists, show, edit, delete, links, limits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.deployments.config import Settings
from services.deployments.main import create_app
from tests.conftest import ClientFactory
from tests.deployments.conftest import Service
from tests.deployments.helpers import (
    ArtifactFactory,
    chunked,
    multipart_body,
    user_headers,
)
from tests.toolkit import assert_error

ARTIFACTS = "/api/management/v1/deployments/artifacts"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def _images(mongo: AsyncMongoClient[Document], db: str, tenant: str = "") -> list[Document]:
    return await mongo[db]["images"].find({"tenant_id": tenant}).to_list()


class TestUploadArtifact:
    async def test_created(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        data = artifacts_factory.make("hello-1.0")
        response = await service.upload(data, description="first build")
        assert response.status_code == 201, response.text
        location = response.headers["Location"]
        assert location.startswith(ARTIFACTS + "/")
        artifact_id = location.rsplit("/", 1)[1]
        assert str(uuid.UUID(artifact_id)) == artifact_id

        docs = await _images(mongo, service.settings.mongo_db)
        assert len(docs) == 1
        doc = docs[0]
        assert doc["_id"] == artifact_id
        assert doc["meta_artifact"]["name"] == "hello-1.0"
        assert doc["meta_artifact"]["depends"]["device_type"] == ["test-device"]
        assert doc["meta"]["description"] == "first build"
        assert doc["size"] == len(data)
        stored = service.settings.storage_path / artifact_id
        assert stored.read_bytes() == data

    async def test_chunked_multipart_body(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        data = artifacts_factory.make("chunked-1.0", payload_size=200_000)
        body, headers = multipart_body(
            [("size", str(len(data))), ("description", "via chunks")], "artifact", data
        )
        response = await service.client.post(
            ARTIFACTS, content=chunked(body, 777), headers={**headers, **user_headers()}
        )
        assert response.status_code == 201, response.text
        artifact_id = response.headers["Location"].rsplit("/", 1)[1]
        shown = await service.client.get(f"{ARTIFACTS}/{artifact_id}", headers=user_headers())
        assert shown.json()["size"] == len(data)
        assert shown.json()["description"] == "via chunks"
        files = shown.json()["updates"][0]["files"]
        assert {f["name"]: f["size"] for f in files}["payload.bin"] == 200_000

    async def test_artifact_id_given(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        wanted = str(uuid.uuid4())
        response = await service.upload(
            artifacts_factory.make("with-id"), fields=[("artifact_id", wanted)]
        )
        assert response.status_code == 201
        assert response.headers["Location"].endswith(f"/{wanted}")

    async def test_bad_artifact_id(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        response = await service.upload(
            artifacts_factory.make("bad-id"), fields=[("artifact_id", "not-a-uuid")]
        )
        assert response.status_code == 400
        assert response.json()["error"] == "artifact_id is not a valid UUID"
        assert response.json()["request_id"] == response.headers["X-MEN-RequestID"]

    async def test_corrupt_artifact_nothing_stored(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        data = bytearray(artifacts_factory.make("corrupt-1.0", payload_size=4096))
        # Flip bytes inside the compressed payload: its checksum no longer matches.
        data[-2000] ^= 0xFF
        data[-1999] ^= 0xFF
        response = await service.upload(bytes(data))
        assert response.status_code == 400
        assert response.json()["error"]
        assert await _images(mongo, service.settings.mongo_db) == []
        assert _files(service.settings.storage_path) == []

    async def test_truncated_artifact_nothing_stored(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        data = artifacts_factory.make("truncated-1.0", payload_size=50_000)
        response = await service.upload(data[: len(data) // 2])
        assert response.status_code == 400
        assert await _images(mongo, service.settings.mongo_db) == []
        assert _files(service.settings.storage_path) == []

    async def test_not_an_artifact(self, service: Service) -> None:
        response = await service.upload(b"hello, this is not a tar archive" * 100)
        assert response.status_code == 400
        assert _files(service.settings.storage_path) == []

    async def test_unterminated_multipart_nothing_stored(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        data = artifacts_factory.make("unterminated")
        body, headers = multipart_body([], "artifact", data, trailer=False)
        response = await service.client.post(
            ARTIFACTS, content=body, headers={**headers, **user_headers()}
        )
        assert response.status_code == 400
        assert _files(service.settings.storage_path) == []

    async def test_duplicate_conflict(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        data = artifacts_factory.make("dup-1.0", ["dev-a", "dev-b"])
        assert (await service.upload(data)).status_code == 201
        overlapping = artifacts_factory.make("dup-1.0", ["dev-b", "dev-c"])
        response = await service.upload(overlapping)
        assert response.status_code == 409
        body = response.json()
        assert body["error"] == "an artifact with the same name and depends already exists"
        assert body["metadata"]["conflict"] == {"device_type": "dev-b"}
        assert body["request_id"] == response.headers["X-MEN-RequestID"]
        assert len(await _images(mongo, service.settings.mongo_db)) == 1
        assert len(_files(service.settings.storage_path)) == 1

    async def test_same_name_other_device_type(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        assert (await service.upload(artifacts_factory.make("multi", ["dev-a"]))).status_code == 201
        assert (await service.upload(artifacts_factory.make("multi", ["dev-b"]))).status_code == 201
        docs = await _images(mongo, service.settings.mongo_db)
        assert sorted(d["meta_artifact"]["depends"]["device_type"] for d in docs) == [
            ["dev-a"],
            ["dev-b"],
        ]
        assert len(_files(service.settings.storage_path)) == 2

    async def test_same_name_different_depends(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        first = artifacts_factory.make("dep", depends=["rootfs-image.single-file.version:v1"])
        second = artifacts_factory.make("dep", depends=["rootfs-image.single-file.version:v2"])
        assert (await service.upload(first)).status_code == 201
        assert (await service.upload(second)).status_code == 201
        docs = await _images(mongo, service.settings.mongo_db)
        assert [d["meta_artifact"]["name"] for d in docs] == ["dep", "dep"]
        assert len(_files(service.settings.storage_path)) == 2

    async def test_declared_size_too_large(self, service: Service) -> None:
        body, headers = multipart_body([("size", str(11 * 1024**3))], "artifact", b"irrelevant")
        response = await service.client.post(
            ARTIFACTS, content=body, headers={**headers, **user_headers()}
        )
        assert response.status_code == 413
        assert response.json()["error"] == "Artifact file too large"

    async def test_content_too_large(
        self,
        asgi_client: ClientFactory,
        settings: Settings,
        artifacts_factory: ArtifactFactory,
    ) -> None:
        small = settings.model_copy(update={"max_image_size": 8192})
        data = artifacts_factory.make("big", payload_size=100_000)
        body, headers = multipart_body([], "artifact", data)
        async with asgi_client(create_app(small)) as client:
            response = await client.post(
                ARTIFACTS, content=chunked(body, 4096), headers={**headers, **user_headers()}
            )
        assert response.status_code == 413
        assert _files(settings.storage_path) == []

    async def test_missing_artifact_part(self, service: Service) -> None:
        boundary = "b0undary"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="size"\r\n\r\n10\r\n--{boundary}--\r\n'
        )
        response = await service.client.post(
            ARTIFACTS,
            content=body.encode(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                **user_headers(),
            },
        )
        assert response.status_code == 400
        assert response.json()["error"] == "request does not contain the artifact file"

    async def test_not_multipart(self, service: Service) -> None:
        response = await service.client.post(
            ARTIFACTS, json={"artifact": "x"}, headers=user_headers()
        )
        assert response.status_code == 400
        assert response.json()["error"] == "request Content-Type isn't multipart/form-data"

    async def test_bad_size_field(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        response = await service.upload(artifacts_factory.make("s"), fields=[("size", "twelve")])
        assert_error(response, 400, "invalid form value 'size': 'twelve' is not an integer")
        assert await _images(mongo, service.settings.mongo_db) == []
        assert _files(service.settings.storage_path) == []

    async def test_description_too_long(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        response = await service.upload(artifacts_factory.make("d"), description="x" * 4097)
        assert_error(response, 400, "description: the length must be no more than 4096")
        assert await _images(mongo, service.settings.mongo_db) == []
        assert _files(service.settings.storage_path) == []

    async def test_unauthorized(self, service: Service) -> None:
        response = await service.client.post(ARTIFACTS, content=b"")
        assert response.status_code == 401
        assert response.json()["error"]

    async def test_tenants_are_separate(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        data = artifacts_factory.make("tenanted")
        assert (await service.upload(data, tenant="tenant-a")).status_code == 201
        # The same artifact is no conflict for another tenant.
        response = await service.upload(data, tenant="tenant-b")
        assert response.status_code == 201
        artifact_id = response.headers["Location"].rsplit("/", 1)[1]
        assert (service.settings.storage_path / "tenant-b" / artifact_id).exists()
        other = await service.client.get(
            f"{ARTIFACTS}/{artifact_id}", headers=user_headers("tenant-a")
        )
        assert other.status_code == 404
        listed = await service.client.get(ARTIFACTS, headers=user_headers("tenant-a"))
        assert [a["id"] for a in listed.json()] != [artifact_id]
        assert len(await _images(mongo, service.settings.mongo_db, "tenant-a")) == 1


class TestListArtifacts:
    async def test_filters(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("alpha-1", ["dev-a"]), description="Nightly")
        await service.upload(artifacts_factory.make("beta-1", ["dev-b"]), description="release")
        response = await service.client.get(ARTIFACTS, headers=user_headers())
        assert response.status_code == 200
        assert [a["name"] for a in response.json()] == ["alpha-1", "beta-1"]
        for query, expected in [
            ("name=ALPHA", ["alpha-1"]),
            ("description=night", ["alpha-1"]),
            ("device_type=dev-b", ["beta-1"]),
            ("name=nomatch", []),
        ]:
            got = await service.client.get(f"{ARTIFACTS}?{query}", headers=user_headers())
            assert [a["name"] for a in got.json()] == expected, query

    async def test_shape_for_mender_cli(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("shape", metadata={"foo": "bar"}))
        artifact = (await service.client.get(ARTIFACTS, headers=user_headers())).json()[0]
        assert artifact["info"] == {"format": "mender", "version": 3}
        assert artifact["signed"] is False
        update = artifact["updates"][0]
        assert update["type_info"] == {"type": "single-file"}
        assert update["meta_data"] == [{"foo": "bar"}]
        assert update["metadata"] == {"foo": "bar"}
        assert artifact["artifact_provides"]["rootfs-image.single-file.version"] == "shape"
        assert artifact["artifact_depends"] == {"device_type": ["test-device"]}
        assert artifact["clears_artifact_provides"] == ["rootfs-image.single-file.*"]
        assert artifact["modified"].endswith("Z")

    async def test_paged_list(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        for i in range(5):
            await service.upload(artifacts_factory.make(f"paged-{i}"))
        response = await service.client.get(
            f"{ARTIFACTS}/list?page=2&per_page=2&sort=name:desc", headers=user_headers()
        )
        assert response.status_code == 200
        assert [a["name"] for a in response.json()] == ["paged-2", "paged-1"]
        assert response.headers["X-Total-Count"] == "5"
        assert 'rel="next"' in response.headers["Link"]

    async def test_bad_paging(self, service: Service) -> None:
        for query in ("per_page=0", "per_page=501", "page=abc", "sort=size:asc"):
            response = await service.client.get(f"{ARTIFACTS}/list?{query}", headers=user_headers())
            assert response.status_code == 400, query
            assert response.json()["error"]

    async def test_v2_exact_and_prefix(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        for name in ("app-1.0", "app-1.1", "other"):
            await service.upload(artifacts_factory.make(name))
        v2 = "/api/management/v2/deployments/artifacts"
        exact = await service.client.get(f"{v2}?name=app-1.0&name=other", headers=user_headers())
        assert [a["name"] for a in exact.json()] == ["app-1.0", "other"]
        prefix = await service.client.get(f"{v2}?name=app*", headers=user_headers())
        assert [a["name"] for a in prefix.json()] == ["app-1.0", "app-1.1"]
        assert prefix.headers["X-Total-Count"] == "2"
        page = await service.client.get(f"{v2}?per_page=1&page=2", headers=user_headers())
        assert [a["name"] for a in page.json()] == ["app-1.1"]
        mixed = await service.client.get(f"{v2}?name=app*&name=other", headers=user_headers())
        assert mixed.status_code == 400
        types = await service.client.get(f"{v2}?device_type=test*", headers=user_headers())
        assert len(types.json()) == 3


class TestShowArtifact:
    async def test_not_found(self, service: Service) -> None:
        response = await service.client.get(f"{ARTIFACTS}/{uuid.uuid4()}", headers=user_headers())
        assert response.status_code == 404
        assert response.json()["error"]

    async def test_bad_id(self, service: Service) -> None:
        response = await service.client.get(f"{ARTIFACTS}/nope", headers=user_headers())
        assert response.status_code == 400
        assert response.json()["error"] == "ID is not a valid UUID"


class TestEditArtifact:
    async def test_description(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        location = (await service.upload(artifacts_factory.make("edit"))).headers["Location"]
        response = await service.client.put(
            location, json={"description": "new words"}, headers=user_headers()
        )
        assert response.status_code == 204
        shown = await service.client.get(location, headers=user_headers())
        assert shown.json()["description"] == "new words"
        release = await service.client.get(
            "/api/management/v1/deployments/deployments/releases?description=new",
            headers=user_headers(),
        )
        assert [r["Name"] for r in release.json()] == ["edit"]

    async def test_bad_body(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        location = (await service.upload(artifacts_factory.make("edit-bad"))).headers["Location"]
        for content in (b"{", b'{"description": 5}', b"[]"):
            response = await service.client.put(
                location,
                content=content,
                headers={"Content-Type": "application/json", **user_headers()},
            )
            assert response.status_code == 400, content
            assert response.json()["error"]

    async def test_not_found(self, service: Service) -> None:
        response = await service.client.put(
            f"{ARTIFACTS}/{uuid.uuid4()}", json={"description": "x"}, headers=user_headers()
        )
        assert_error(response, 404, "Resource not found")


class TestDeleteArtifact:
    async def test_deleted_with_file(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        location = (await service.upload(artifacts_factory.make("gone"))).headers["Location"]
        response = await service.client.delete(location, headers=user_headers())
        assert response.status_code == 204
        assert await _images(mongo, service.settings.mongo_db) == []
        assert _files(service.settings.storage_path) == []
        releases = (
            await mongo[service.settings.mongo_db]["releases"].find({"tenant_id": ""}).to_list()
        )
        assert releases == []
        again = await service.client.delete(location, headers=user_headers())
        assert again.status_code == 404

    async def test_in_use_by_active_deployment(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        location = (await service.upload(artifacts_factory.make("busy"))).headers["Location"]
        created = await service.client.post(
            "/api/management/v1/deployments/deployments",
            json={"name": "d", "artifact_name": "busy", "devices": ["dev-1"]},
            headers=user_headers(),
        )
        assert created.status_code == 201
        response = await service.client.delete(location, headers=user_headers())
        assert response.status_code == 409
        assert response.json()["error"] == "Artifact is used in active deployment"
        edit = await service.client.put(location, json={"description": "x"}, headers=user_headers())
        assert edit.status_code == 422


class TestDownloadLink:
    async def test_link_serves_the_file(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        data = artifacts_factory.make("dl-1.0", payload_size=30_000)
        location = (await service.upload(data)).headers["Location"]
        response = await service.client.get(f"{location}/download", headers=user_headers())
        assert response.status_code == 200
        link = response.json()
        assert link["uri"].startswith("http://testserver/api/devices/v1/deployments/download/")
        assert "x-men-signature=" in link["uri"]
        assert "x-men-expire=" in link["uri"]
        lifetime = datetime.fromisoformat(link["expire"]) - datetime.now(UTC)
        assert timedelta(minutes=14) < lifetime <= timedelta(minutes=15)
        fetched = await service.client.get(link["uri"])
        assert fetched.status_code == 200
        assert fetched.content == data
        assert fetched.headers["Content-Length"] == str(len(data))
        assert fetched.headers["Accept-Ranges"] == "bytes"
        assert fetched.headers["Content-Disposition"] == 'attachment; filename="dl-1.0.mender"'

    async def test_forwarded_host(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        location = (await service.upload(artifacts_factory.make("fwd"))).headers["Location"]
        response = await service.client.get(
            f"{location}/download",
            headers={
                **user_headers(),
                "X-Forwarded-Host": "updates.example.com",
                "X-Forwarded-Proto": "https",
            },
        )
        assert response.json()["uri"].startswith("https://updates.example.com/api/devices/")

    async def test_not_found(self, service: Service) -> None:
        response = await service.client.get(
            f"{ARTIFACTS}/{uuid.uuid4()}/download", headers=user_headers()
        )
        assert_error(response, 404, "Resource not found")


class TestStorageLimit:
    async def test_default_unlimited(self, service: Service) -> None:
        response = await service.client.get(
            "/api/management/v1/deployments/limits/storage", headers=user_headers()
        )
        assert response.status_code == 200
        assert response.json() == {"limit": 0, "usage": 0}

    async def test_set_internally(self, service: Service) -> None:
        internal = "/api/internal/v1/deployments/tenants/t1/limits/storage"
        assert (await service.client.put(internal, json={"limit": 1000})).status_code == 204
        response = await service.client.get(
            "/api/management/v1/deployments/limits/storage", headers=user_headers("t1")
        )
        assert response.json() == {"limit": 1000, "usage": 0}
        assert (await service.client.get(internal)).json() == {"limit": 1000, "usage": 0}
        assert (await service.client.put(internal, json={"limit": -1})).status_code == 400

    async def test_unknown_limit(self, service: Service) -> None:
        response = await service.client.get(
            "/api/management/v1/deployments/limits/devices", headers=user_headers()
        )
        assert_error(response, 400, "unsupported limit devices")


async def test_health(service: Service) -> None:
    for path in ("health", "alive"):
        response = await service.client.get(f"/api/internal/v1/deployments/{path}")
        assert response.status_code == 204
        assert response.content == b""


class TestInternalUpload:
    async def test_upload_for_tenant(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        body, headers = multipart_body(
            [("description", "from a worker")], "artifact", artifacts_factory.make("internal")
        )
        response = await service.client.post(
            "/api/internal/v1/deployments/tenants/t-5/artifacts", content=body, headers=headers
        )
        assert response.status_code == 201
        artifact_id = response.headers["Location"].rsplit("/", 1)[1]
        shown = await service.client.get(f"{ARTIFACTS}/{artifact_id}", headers=user_headers("t-5"))
        assert shown.json()["description"] == "from a worker"

    async def test_default_tenant_alias(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        body, headers = multipart_body([], "artifact", artifacts_factory.make("default-t"))
        response = await service.client.post(
            "/api/internal/v1/deployments/tenants/default/artifacts", content=body, headers=headers
        )
        assert response.status_code == 201
        listed = await service.client.get(ARTIFACTS, headers=user_headers())
        assert [a["name"] for a in listed.json()] == ["default-t"]


class TestHostileInput:
    async def test_oversized_json_on_a_streaming_prefix(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        location = (await service.upload(artifacts_factory.make("h"))).headers["Location"]
        huge = b'{"description": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        response = await service.client.put(
            location, content=huge, headers={"Content-Type": "application/json", **user_headers()}
        )
        assert_error(response, 413, "request body exceeds the limit of 1048576 bytes")
        shown = await service.client.get(location, headers=user_headers())
        assert shown.json()["description"] == ""

    async def test_oversized_form_field(self, service: Service) -> None:
        body, headers = multipart_body([("description", "d" * (1024 * 1024 + 1))], "artifact", b"")
        response = await service.client.post(
            ARTIFACTS, content=body, headers={**headers, **user_headers()}
        )
        assert_error(response, 400, "failed to read form value 'description': too large")
        assert _files(service.settings.storage_path) == []

    async def test_unicode_name_download(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        data = artifacts_factory.make('päckage "1"')
        location = (await service.upload(data)).headers["Location"]
        link = (await service.client.get(f"{location}/download", headers=user_headers())).json()
        fetched = await service.client.get(link["uri"])
        assert fetched.status_code == 200
        assert fetched.content == data
        disposition = fetched.headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="p_ckage _1_.mender"')
        assert "filename*=UTF-8''p%C3%A4ckage%20%221%22.mender" in disposition
