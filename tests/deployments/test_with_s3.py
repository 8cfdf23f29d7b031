"""The service on S3 storage (SeaweedFS): uploads land in the bucket, devices get S3 links."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from services.deployments.config import Settings
from services.deployments.main import create_app
from tests.conftest import ClientFactory
from tests.deployments.flows import create_deployment, poll
from tests.deployments.helpers import ArtifactFactory, multipart_body, user_headers
from tests.deployments.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedS3

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

ARTIFACTS = "/api/management/v1/deployments/artifacts"


@pytest.fixture
def s3_settings(settings: Settings, s3_server: SeaweedS3) -> Settings:
    """The service's settings with a fresh bucket."""
    return settings.model_copy(
        update={
            "storage_default": "aws",
            "aws_uri": s3_server.endpoint,
            "aws_bucket": f"fleetport-app-{uuid.uuid4().hex[:12]}",
            "aws_auth_key": ACCESS_KEY_ID,
            "aws_auth_secret": SECRET_ACCESS_KEY,
            "aws_create_bucket": True,
        }
    )


async def test_upload_and_device_download(
    asgi_client: ClientFactory,
    s3_settings: Settings,
    s3: S3Client,
    artifacts_factory: ArtifactFactory,
) -> None:
    data = artifacts_factory.make("s3-app-1.0", payload_size=20_000)
    async with asgi_client(create_app(s3_settings)) as client:
        body, headers = multipart_body([], "artifact", data)
        created = await client.post(ARTIFACTS, content=body, headers={**headers, **user_headers()})
        assert created.status_code == 201
        corrupt, headers = multipart_body([], "artifact", data[:3000])
        refused = await client.post(
            ARTIFACTS, content=corrupt, headers={**headers, **user_headers()}
        )
        assert refused.status_code == 400
        await create_deployment(client, name="s3", artifact_name="s3-app-1.0", devices=["dev"])
        instructions = await poll(client, "dev")
        assert instructions.status_code == 200
        uri = instructions.json()["artifact"]["source"]["uri"]
        assert uri.startswith(s3_settings.aws_uri or "")
        assert "X-Amz-Signature=" in uri
    async with httpx.AsyncClient() as plain:
        download = await plain.get(uri)
        assert download.status_code == 200
        assert download.content == data
        ranged = await plain.get(uri, headers={"Range": "bytes=100-"})
        assert ranged.status_code == 206
        assert ranged.content == data[100:]
    listed = await s3.list_objects_v2(Bucket=s3_settings.aws_bucket)
    # Only the valid artifact is kept; the rejected upload left nothing behind.
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert keys == [created.headers["Location"].rsplit("/", 1)[1]]
