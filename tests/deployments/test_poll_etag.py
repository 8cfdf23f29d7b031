"""`ETag`/`If-None-Match` on `next`: 304 only while the answer and its link still stand."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta

import httpx

from services.deployments.config import Settings
from services.deployments.main import create_app
from tests.conftest import ClientFactory
from tests.deployments.conftest import Service
from tests.deployments.flows import DEPLOYMENTS, NEXT_V1, NEXT_V2, create_deployment, report
from tests.deployments.helpers import DEVICE_TYPE, ArtifactFactory, device_headers, user_headers
from tests.toolkit import ManualClock, assert_error

_CONFIGURATION = "/api/internal/v1/deployments/tenants//configuration/deployments"


async def _poll(
    client: httpx.AsyncClient, device: str, tag: str | None = None, artifact: str = "old-1"
) -> httpx.Response:
    headers = [(k.encode(), v.encode()) for k, v in device_headers(device).items()]
    if tag is not None:
        # As the bytes a client may send, not only ASCII.
        headers.append((b"if-none-match", tag.encode("latin-1")))
    body = {"device_provides": {"artifact_name": artifact, "device_type": DEVICE_TYPE}}
    return await client.post(NEXT_V2, json=body, headers=headers)


def _not_modified(response: httpx.Response, tag: str) -> None:
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == tag


async def _deploy(service: Service, artifacts: ArtifactFactory, *devices: str) -> str:
    await service.upload(artifacts.make("app-2.0"))
    return await create_deployment(
        service.client, name="x", artifact_name="app-2.0", devices=list(devices)
    )


class TestTags:
    async def test_without_if_none_match_the_answer_is_unchanged(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        deployment_id = await _deploy(service, artifacts_factory, "dev")
        first = await _poll(service.client, "dev")
        again = await _poll(service.client, "dev")
        for response in (first, again):
            assert response.status_code == 200
            assert response.json()["id"] == deployment_id
            assert response.json()["artifact"]["source"]["uri"]
            assert response.headers["etag"].startswith('"')
        idle = await _poll(service.client, "other")
        assert idle.status_code == 204
        assert "etag" not in idle.headers

    async def test_a_standing_tag_is_not_modified_on_every_form(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await _deploy(service, artifacts_factory, "dev")
        tag = (await _poll(service.client, "dev")).headers["etag"]
        _not_modified(await _poll(service.client, "dev", tag), tag)
        _not_modified(await _poll(service.client, "dev", f'"x", W/{tag}'), tag)
        v1_get = await service.client.get(
            NEXT_V1,
            params={"artifact_name": "old-1", "device_type": DEVICE_TYPE},
            headers={**device_headers("dev"), "If-None-Match": tag},
        )
        _not_modified(v1_get, tag)
        v1_post = await service.client.post(
            NEXT_V1,
            json={"artifact_name": "old-1", "device_type": DEVICE_TYPE},
            headers={**device_headers("dev"), "If-None-Match": tag},
        )
        _not_modified(v1_post, tag)

    async def test_only_its_own_tags_match(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await _deploy(service, artifacts_factory, "dev", "peer")
        tag = (await _poll(service.client, "dev")).headers["etag"]
        expire, _, mac = tag.strip('"').partition(".")
        later = f'"{int(expire) + 3600}.{mac}"'
        for other in ("*", later, tag.strip('"'), '"é.x"', f'"{expire}.é"', '""'):
            response = await _poll(service.client, "dev", other)
            assert response.status_code == 200, other
            assert response.headers["etag"] != other
        # Another device in the same deployment is told the same, under its own tag.
        peer = await _poll(service.client, "peer", tag)
        assert peer.status_code == 200
        assert peer.headers["etag"] != tag

    async def test_the_link_is_renewed_past_half_its_life(
        self,
        asgi_client: ClientFactory,
        settings: Settings,
        clock: ManualClock,
        artifacts_factory: ArtifactFactory,
    ) -> None:
        app = create_app(settings, clock=clock.now)
        async with asgi_client(app) as client:
            service = Service(app=app, client=client, settings=settings)
            await _deploy(service, artifacts_factory, "dev")
            first = await _poll(client, "dev")
            tag = first.headers["etag"]
            clock.advance(timedelta(hours=11))
            _not_modified(await _poll(client, "dev", tag), tag)
            clock.advance(timedelta(hours=2))
            renewed = await _poll(client, "dev", tag)
            assert renewed.status_code == 200
            assert renewed.json()["id"] == first.json()["id"]
            assert renewed.json()["artifact"]["source"]["uri"]
            # The storage signs with the real clock, 13 hours behind this one: by this clock
            # the new link too has less than half its life left, so it is sent again.
            assert (await _poll(client, "dev", renewed.headers["etag"])).status_code == 200


class TestChangesAreNeverHidden:
    async def test_aborted(self, service: Service, artifacts_factory: ArtifactFactory) -> None:
        deployment_id = await _deploy(service, artifacts_factory, "dev")
        tag = (await _poll(service.client, "dev")).headers["etag"]
        aborted = await service.client.put(
            f"{DEPLOYMENTS}/{deployment_id}/status",
            json={"status": "aborted"},
            headers=user_headers(),
        )
        assert aborted.status_code == 204
        response = await _poll(service.client, "dev", tag)
        assert response.status_code == 204
        assert "etag" not in response.headers

    async def test_finished_then_a_new_deployment(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        first = await _deploy(service, artifacts_factory, "dev")
        tag = (await _poll(service.client, "dev")).headers["etag"]
        for status in ("downloading", "installing", "success"):
            assert (await report(service.client, "dev", first, status)).status_code == 204
        assert (await _poll(service.client, "dev", tag, artifact="app-2.0")).status_code == 204
        await service.upload(artifacts_factory.make("app-3.0"))
        second = await create_deployment(
            service.client, name="y", artifact_name="app-3.0", devices=["dev"]
        )
        response = await _poll(service.client, "dev", tag, artifact="app-2.0")
        assert response.status_code == 200
        assert response.json()["id"] == second
        assert response.headers["etag"] != tag

    async def test_changed_provides_still_conflict(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await _deploy(service, artifacts_factory, "dev")
        tag = (await _poll(service.client, "dev")).headers["etag"]
        conflict = await _poll(service.client, "dev", tag, artifact="something-else")
        assert_error(conflict, 409, "Device provided conflicting request data")

    async def test_configuration_deployments(self, service: Service) -> None:
        created = await service.client.post(
            f"{_CONFIGURATION}/{'1' * 8}-1111-4111-8111-{'1' * 12}/devices/dev",
            json={"name": "config-1", "configuration": {"timezone": "UTC"}},
        )
        assert created.status_code == 201, created.text
        tag = (await _poll(service.client, "dev")).headers["etag"]
        _not_modified(await _poll(service.client, "dev", tag), tag)
        other_type = await service.client.post(
            NEXT_V2,
            json={"device_provides": {"artifact_name": "old-1", "device_type": "other"}},
            headers={**device_headers("dev"), "If-None-Match": tag},
        )
        assert_error(other_type, 409, "Device provided conflicting request data")


class TestReplicas:
    async def test_a_tag_stands_on_every_replica_until_the_change(
        self, asgi_client: ClientFactory, settings: Settings, artifacts_factory: ArtifactFactory
    ) -> None:
        async with AsyncExitStack() as stack:
            app = create_app(settings)
            a = await stack.enter_async_context(asgi_client(app))
            b = await stack.enter_async_context(asgi_client(create_app(settings)))
            other_secret = settings.model_copy(update={"presign_secret": "another-secret-" * 3})
            c = await stack.enter_async_context(asgi_client(create_app(other_secret)))
            deployment_id = await _deploy(Service(app, a, settings), artifacts_factory, "dev")
            tag = (await _poll(a, "dev")).headers["etag"]
            _not_modified(await _poll(b, "dev", tag), tag)
            # A replica with another secret makes other tags, and takes none of these.
            elsewhere = await _poll(c, "dev", tag)
            assert elsewhere.status_code == 200
            assert elsewhere.json()["id"] == deployment_id
            assert elsewhere.headers["etag"] != tag
            aborted = await a.put(
                f"{DEPLOYMENTS}/{deployment_id}/status",
                json={"status": "aborted"},
                headers=user_headers(),
            )
            assert aborted.status_code == 204
            after = await _poll(b, "dev", tag)
            assert after.status_code == 204
            assert "etag" not in after.headers
