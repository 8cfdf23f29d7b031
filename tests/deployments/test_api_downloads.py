"""Signed download links served by deployments itself (local storage): ranges and signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.deployments.config import Settings
from services.deployments.main import create_app
from services.deployments.storage.local import OBJECTS_PATH
from services.deployments.storage.signing import URLSigner
from tests.conftest import ClientFactory
from tests.deployments.conftest import TEST_SECRET, Service
from tests.deployments.helpers import ArtifactFactory, multipart_body, user_headers
from tests.toolkit import assert_error

ARTIFACTS = "/api/management/v1/deployments/artifacts"


@pytest.fixture
async def stored(service: Service, artifacts_factory: ArtifactFactory) -> tuple[str, str, bytes]:
    """An uploaded artifact: its id, a fresh download link and its bytes."""
    data = artifacts_factory.make("ranged-1.0", payload_size=20_000)
    location = (await service.upload(data)).headers["Location"]
    link = (await service.client.get(f"{location}/download", headers=user_headers())).json()
    return location.rsplit("/", 1)[1], link["uri"], data


class TestDownloadObject:
    async def test_range(self, service: Service, stored: tuple[str, str, bytes]) -> None:
        _, uri, data = stored
        response = await service.client.get(uri, headers={"Range": "bytes=100-199"})
        assert response.status_code == 206
        assert response.content == data[100:200]
        assert response.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert response.headers["Content-Length"] == "100"

    async def test_resume_open_range(
        self, service: Service, stored: tuple[str, str, bytes]
    ) -> None:
        _, uri, data = stored
        first = (await service.client.get(uri, headers={"Range": "bytes=0-4999"})).content
        rest = await service.client.get(uri, headers={"Range": "bytes=5000-"})
        assert rest.status_code == 206
        assert rest.headers["Content-Range"] == f"bytes 5000-{len(data) - 1}/{len(data)}"
        assert first + rest.content == data

    async def test_suffix_range(self, service: Service, stored: tuple[str, str, bytes]) -> None:
        _, uri, data = stored
        response = await service.client.get(uri, headers={"Range": "bytes=-10"})
        assert response.status_code == 206
        assert response.content == data[-10:]

    async def test_end_past_size_is_clamped(
        self, service: Service, stored: tuple[str, str, bytes]
    ) -> None:
        _, uri, data = stored
        response = await service.client.get(uri, headers={"Range": f"bytes=10-{len(data) * 2}"})
        assert response.status_code == 206
        assert response.content == data[10:]

    async def test_unsatisfiable(self, service: Service, stored: tuple[str, str, bytes]) -> None:
        _, uri, data = stored
        response = await service.client.get(uri, headers={"Range": f"bytes={len(data)}-"})
        assert response.status_code == 416
        assert response.headers["Content-Range"] == f"bytes */{len(data)}"
        assert response.json()["error"]

    async def test_multiple_ranges_send_everything(
        self, service: Service, stored: tuple[str, str, bytes]
    ) -> None:
        _, uri, data = stored
        response = await service.client.get(uri, headers={"Range": "bytes=0-1,5-6"})
        assert response.status_code == 200
        assert response.content == data

    async def test_bad_signature(self, service: Service, stored: tuple[str, str, bytes]) -> None:
        _, uri, _ = stored
        forged = uri.replace("x-men-signature=", "x-men-signature=AAAA")
        response = await service.client.get(forged)
        assert response.status_code == 403
        assert response.json()["error"] == "signature invalid"

    async def test_other_object_same_signature(
        self, service: Service, artifacts_factory: ArtifactFactory, stored: tuple[str, str, bytes]
    ) -> None:
        artifact_id, uri, _ = stored
        other = (await service.upload(artifacts_factory.make("other-1.0"))).headers["Location"]
        forged = uri.replace(artifact_id, other.rsplit("/", 1)[1])
        assert_error(await service.client.get(forged), 403, "signature invalid")

    async def test_changed_filename(self, service: Service, stored: tuple[str, str, bytes]) -> None:
        _, uri, _ = stored
        forged = uri.replace("filename=ranged-1.0.mender", "filename=evil.sh")
        assert_error(await service.client.get(forged), 403, "signature invalid")

    async def test_expired(self, service: Service, stored: tuple[str, str, bytes]) -> None:
        artifact_id, _, _ = stored
        signer = URLSigner(TEST_SECRET)
        uri = signer.sign(
            base_url="http://testserver",
            method="GET",
            path=OBJECTS_PATH + artifact_id,
            expire=datetime.now(UTC) - timedelta(seconds=5),
            extra={"filename": "x.mender"},
        )
        response = await service.client.get(uri)
        assert response.status_code == 403
        assert response.json()["error"] == "URL expired"

    async def test_missing_parameters(
        self, service: Service, stored: tuple[str, str, bytes]
    ) -> None:
        artifact_id, uri, _ = stored
        response = await service.client.get(OBJECTS_PATH + artifact_id)
        assert_error(response, 400, "x-men-expire and x-men-signature are required")
        query = parse_qs(urlsplit(uri).query)
        no_signature = f"{OBJECTS_PATH}{artifact_id}?x-men-expire={query['x-men-expire'][0]}"
        assert_error(
            await service.client.get(no_signature),
            400,
            "x-men-expire and x-men-signature are required",
        )
        bad_expire = f"{OBJECTS_PATH}{artifact_id}?x-men-expire=tomorrow&x-men-signature=abc"
        assert_error(
            await service.client.get(bad_expire), 400, "'x-men-expire' is not a valid timestamp"
        )

    async def test_traversal_key(self, service: Service) -> None:
        signer = URLSigner(TEST_SECRET)
        # The client normalises the dot segments, so the first and last no longer match
        # their signature's path; the encoded one reaches the storage, which has no such key.
        for key, status, message in (
            ("../../etc/passwd", 404, "not found"),
            ("..%2F..%2Fetc%2Fpasswd", 404, "Resource not found"),
            ("a/./b", 403, "signature invalid"),
        ):
            uri = signer.sign(
                base_url="http://testserver",
                method="GET",
                path=OBJECTS_PATH + key,
                expire=datetime.now(UTC) + timedelta(minutes=5),
            )
            assert_error(await service.client.get(uri), status, message)

    async def test_missing_object(self, service: Service) -> None:
        signer = URLSigner(TEST_SECRET)
        uri = signer.sign(
            base_url="http://testserver",
            method="GET",
            path=OBJECTS_PATH + "0f7c5c54-2bd4-4a8f-9b5b-6b6d3b4a6c1e",
            expire=datetime.now(UTC) + timedelta(minutes=5),
        )
        assert_error(await service.client.get(uri), 404, "Resource not found")


class TestPresignURLBase:
    async def test_setting_wins(
        self, asgi_client: ClientFactory, settings: Settings, artifacts_factory: ArtifactFactory
    ) -> None:
        configured = settings.model_copy(update={"presign_url_base": "https://dl.example.org/"})
        async with asgi_client(create_app(configured)) as client:
            body, headers = multipart_body([], "artifact", artifacts_factory.make("base"))
            created = await client.post(
                ARTIFACTS, content=body, headers={**headers, **user_headers()}
            )
            link = await client.get(
                created.headers["Location"] + "/download",
                headers={**user_headers(), "X-Forwarded-Host": "ignored.example"},
            )
        assert link.json()["uri"].startswith("https://dl.example.org/api/devices/v1/")
