"""Direct uploads: a signed PUT link, then `complete` verifies and records the artifact."""

from __future__ import annotations

import uuid

from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.deployments.config import Settings
from services.deployments.main import create_app
from tests.conftest import ClientFactory
from tests.deployments.conftest import Service
from tests.deployments.helpers import ArtifactFactory, user_headers
from tests.toolkit import assert_error

DIRECT = "/api/management/v1/deployments/artifacts/directupload"
ARTIFACTS = "/api/management/v1/deployments/artifacts"


async def _intent(service: Service, tenant: str = "") -> tuple[str, str]:
    response = await service.client.post(DIRECT, headers=user_headers(tenant))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "uri", "expire"}
    return body["id"], body["uri"]


class TestDirectUpload:
    async def test_upload_and_complete(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        data = artifacts_factory.make("direct-1.0", payload_size=5000)
        intent_id, uri = await _intent(service, "t3")
        put = await service.client.put(uri, content=data)
        assert put.status_code == 200
        complete = await service.client.post(
            f"{DIRECT}/{intent_id}/complete", headers=user_headers("t3")
        )
        assert complete.status_code == 202
        await service.services.tasks.wait_idle()
        shown = await service.client.get(f"{ARTIFACTS}/{intent_id}", headers=user_headers("t3"))
        assert shown.status_code == 200
        assert shown.json()["name"] == "direct-1.0"
        assert shown.json()["size"] == len(data)
        assert (service.settings.storage_path / "t3" / intent_id).read_bytes() == data
        # The link is spent: neither a second PUT nor a second completion is accepted.
        assert (await service.client.put(uri, content=b"other")).status_code == 404
        again = await service.client.post(
            f"{DIRECT}/{intent_id}/complete", headers=user_headers("t3")
        )
        assert again.status_code == 404

    async def test_corrupt_upload_is_dropped(
        self, service: Service, mongo: AsyncMongoClient[Document]
    ) -> None:
        intent_id, uri = await _intent(service)
        assert (await service.client.put(uri, content=b"not an artifact" * 50)).status_code == 200
        await service.client.post(f"{DIRECT}/{intent_id}/complete", headers=user_headers())
        await service.services.tasks.wait_idle()
        assert (await service.client.get(ARTIFACTS, headers=user_headers())).json() == []
        assert not (service.settings.storage_path / intent_id).exists()
        intent = await mongo[service.settings.mongo_db]["uploads"].find_one(
            {"tenant_id": "", "_id": intent_id}
        )
        assert intent is not None
        assert intent["state"] == "failed"
        assert intent["error"]

    async def test_complete_unknown(self, service: Service) -> None:
        for intent_id in (str(uuid.uuid4()), "garbage"):
            response = await service.client.post(
                f"{DIRECT}/{intent_id}/complete", headers=user_headers()
            )
            assert response.status_code == 404
            assert response.json()["error"]

    async def test_other_tenant_cannot_complete(
        self,
        service: Service,
        artifacts_factory: ArtifactFactory,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        intent_id, uri = await _intent(service, "owner")
        await service.client.put(uri, content=artifacts_factory.make("mine"))
        response = await service.client.post(
            f"{DIRECT}/{intent_id}/complete", headers=user_headers("intruder")
        )
        assert_error(response, 404, "not found")
        await service.services.tasks.wait_idle()
        for tenant in ("owner", "intruder"):
            listed = await service.client.get(ARTIFACTS, headers=user_headers(tenant))
            assert listed.json() == []
        intent = await mongo[service.settings.mongo_db]["uploads"].find_one(
            {"tenant_id": "owner", "_id": intent_id}
        )
        assert intent is not None
        assert intent["state"] == "pending"

    async def test_forged_put(self, service: Service) -> None:
        intent_id, uri = await _intent(service)
        forged = uri.replace("x-men-signature=", "x-men-signature=Z")
        assert_error(await service.client.put(forged, content=b"x"), 403, "signature invalid")
        as_get = await service.client.get(uri)
        assert_error(as_get, 403, "signature invalid")
        assert not (service.settings.storage_path / intent_id).exists()

    async def test_disabled(
        self, asgi_client: ClientFactory, settings: Settings, mongo: AsyncMongoClient[Document]
    ) -> None:
        disabled = settings.model_copy(update={"enable_direct_upload": False})
        async with asgi_client(create_app(disabled)) as client:
            response = await client.post(DIRECT, headers=user_headers())
        assert_error(response, 404, "direct upload is not enabled")
        assert await mongo[settings.mongo_db]["uploads"].count_documents({}) == 0
