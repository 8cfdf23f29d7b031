"""Artifacts generated on the server (`POST /artifacts/generate`), in the background."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from common.core.outbox import Outbox
from common.web.app import services_of
from services.deployments.api.deps import Services
from services.deployments.config import Settings
from services.deployments.main import create_app
from services.deployments.models import GenerateJob
from services.deployments.storage import object_key
from services.deployments.storage.local import LocalStorage
from services.deployments.storage.signing import URLSigner
from services.deployments.store.mongo import MongoStore
from tests.conftest import ClientFactory
from tests.deployments.conftest import TEST_SECRET, Service
from tests.deployments.helpers import (
    ArtifactFactory,
    multipart_body,
    run_mender_artifact,
    user_headers,
)
from tests.toolkit import assert_error

GENERATE = "/api/management/v1/deployments/artifacts/generate"
ARTIFACTS = "/api/management/v1/deployments/artifacts"


def _form(**overrides: str) -> list[tuple[str, str]]:
    fields = {
        "name": "config-file-1.0",
        "description": "generated here",
        "device_types_compatible": "board-a,board-b",
        "type": "single_file",
        "args": json.dumps({"filename": "app.conf", "dest_dir": "/etc/app"}),
    }
    fields.update(overrides)
    return [(k, v) for k, v in fields.items() if v is not None]


async def _generate(
    service: Service, content: bytes, tenant: str = "", **overrides: str
) -> tuple[int, dict[str, object], str]:
    body, headers = multipart_body(_form(**overrides), "file", content, filename="app.conf")
    response = await service.client.post(
        GENERATE, content=body, headers={**headers, **user_headers(tenant)}
    )
    return (
        response.status_code,
        response.json() if response.content else {},
        response.headers.get("Location", ""),
    )


class TestGenerateArtifact:
    async def test_generated_in_background(
        self, service: Service, tmp_path: Path, mongo: AsyncMongoClient[Document]
    ) -> None:
        content = b"listen = 8080\n" * 500
        status, _, location = await _generate(service, content)
        assert status == 201
        assert location.startswith(ARTIFACTS + "/")
        artifact_id = location.rsplit("/", 1)[1]
        await service.services.tasks.wait_idle()

        shown = await service.client.get(location, headers=user_headers())
        assert shown.status_code == 200
        artifact = shown.json()
        assert artifact["id"] == artifact_id
        assert artifact["name"] == "config-file-1.0"
        assert artifact["description"] == "generated here"
        assert artifact["device_types_compatible"] == ["board-a", "board-b"]
        files = {f["name"]: f["size"] for f in artifact["updates"][0]["files"]}
        assert files == {"dest_dir": 9, "filename": 9, "permissions": 4, "app.conf": len(content)}
        assert artifact["artifact_provides"]["rootfs-image.single-file.version"] == (
            "config-file-1.0"
        )
        listed = await service.client.get(ARTIFACTS, headers=user_headers())
        assert [a["id"] for a in listed.json()] == [artifact_id]

        link = (await service.client.get(f"{location}/download", headers=user_headers())).json()
        data = (await service.client.get(link["uri"])).content
        path = tmp_path / "generated.mender"
        path.write_bytes(data)
        code, output = await run_mender_artifact("read", str(path))
        assert code == 0, output
        assert "Name: config-file-1.0" in output
        assert "Type:   single-file" in output
        code, output = await run_mender_artifact("validate", str(path))
        assert code == 0, output

        job = await mongo[service.settings.mongo_db]["generate_jobs"].find_one(
            {"tenant_id": "", "_id": artifact_id}
        )
        assert job is not None
        assert job["state"] == "done"
        assert not (service.settings.storage_path / f"{artifact_id}.raw").exists()

    async def test_filename_from_the_file_part(self, service: Service) -> None:
        status, _, location = await _generate(service, b"x", args=json.dumps({"dest_dir": "/opt"}))
        assert status == 201
        await service.services.tasks.wait_idle()
        artifact = (await service.client.get(location, headers=user_headers())).json()
        assert "app.conf" in {f["name"] for f in artifact["updates"][0]["files"]}

    @pytest.mark.parametrize(
        ("overrides", "fragment"),
        [
            ({"type": "rootfs"}, "type"),
            ({"type": ""}, "type"),
            ({"name": ""}, "name"),
            ({"device_types_compatible": ""}, "device_types_compatible"),
            ({"args": "{not json"}, "args"),
            ({"args": json.dumps({"filename": "a.txt", "dest_dir": "relative"})}, "dest_dir"),
            ({"args": json.dumps({"filename": "../evil", "dest_dir": "/x"})}, "filename"),
            ({"args": json.dumps({"filename": "dest_dir", "dest_dir": "/x"})}, "filename"),
        ],
    )
    async def test_bad_form(
        self, service: Service, overrides: dict[str, str], fragment: str
    ) -> None:
        status, body, _ = await _generate(service, b"content", **overrides)
        assert status == 400
        assert fragment in str(body["error"])
        assert [p for p in service.settings.storage_path.rglob("*") if p.is_file()] == []

    async def test_missing_file(self, service: Service) -> None:
        boundary = "bnd"
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="name"\r\n\r\nx\r\n--{boundary}--\r\n'
        )
        response = await service.client.post(
            GENERATE,
            content=body.encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **user_headers()},
        )
        assert_error(response, 400, "missing 'file' section")
        assert [p for p in service.settings.storage_path.rglob("*") if p.is_file()] == []

    async def test_not_unique(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        await service.upload(artifacts_factory.make("config-file-1.0", ["board-b"]))
        status, body, _ = await _generate(service, b"content")
        assert status == 422
        assert body["error"] == "Artifact not unique"

    async def test_too_large(self, asgi_client: ClientFactory, settings: Settings) -> None:
        small = settings.model_copy(update={"max_generate_size": 1000})
        async with asgi_client(create_app(small)) as client:
            body, headers = multipart_body(_form(), "file", b"x" * 5000)
            response = await client.post(
                GENERATE, content=body, headers={**headers, **user_headers()}
            )
        assert response.status_code == 413
        assert [p for p in settings.storage_path.rglob("*") if p.is_file()] == []


class TestGenerateRecovery:
    async def test_unfinished_jobs_resume_at_start(
        self,
        asgi_client: ClientFactory,
        settings: Settings,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        # What a crashed process leaves behind: job records and the uploaded file.
        job_id = str(uuid.uuid4())
        raw_key = object_key("t1", f"{job_id}.raw")
        storage = LocalStorage(settings.storage_path, URLSigner(TEST_SECRET))

        async def chunks() -> AsyncIterator[bytes]:
            yield b"payload after a crash"

        await storage.put_stream(raw_key, chunks(), size_limit=1000)
        job = GenerateJob(
            id=job_id,
            tenant_id="t1",
            state="processing",
            name="recovered-1.0",
            device_types=["board-a"],
            filename="file.bin",
            dest_dir="/data",
            raw_key=raw_key,
            raw_size=21,
            created=datetime.now(UTC),
        )
        lost = job.model_copy(update={"id": str(uuid.uuid4()), "raw_key": "t1/gone.raw"})
        db = mongo[settings.mongo_db]
        store = MongoStore(db, outbox=Outbox(db, ()))
        await store.insert_job(job)
        await store.insert_job(lost)

        app = create_app(settings)
        async with asgi_client(app) as client:
            await services_of(app, Services).tasks.wait_idle()
            shown = await client.get(f"{ARTIFACTS}/{job_id}", headers=user_headers("t1"))
        assert shown.status_code == 200
        assert shown.json()["name"] == "recovered-1.0"
        done = await store.get_job("t1", job_id)
        assert done is not None
        assert done.state == "done"
        assert done.name == "recovered-1.0"
        failed = await store.get_job("t1", lost.id)
        assert failed is not None
        assert failed.state == "failed"
        assert failed.error == "the uploaded file is missing"
        assert not (settings.storage_path / "t1" / f"{job_id}.raw").exists()
