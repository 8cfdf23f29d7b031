"""The idle poll answered before FastAPI's routing, and every poll it leaves to the routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from services.deployments.api.devices import LEAN_ROUTES
from tests.deployments.conftest import Service
from tests.deployments.flows import NEXT_V1, NEXT_V2, create_deployment, poll
from tests.deployments.helpers import DEVICE_TYPE, ArtifactFactory, device_headers, user_headers
from tests.toolkit import assert_error
from tests.toolkit.metrics import Scrape

_PROVIDES = {"artifact_name": "installed-0.1", "device_type": DEVICE_TYPE}
_V2_BODY = json.dumps({"device_provides": _PROVIDES, "update_control_map": True}).encode()
_JSON = {"content-type": "application/json"}


async def _lean(
    service: Service,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    body: bytes = b"",
    query: bytes = b"",
) -> int | None:
    """What the lean route answers (its status), or None when it leaves the poll to the route."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": service.app,
    }
    answer = await LEAN_ROUTES[(method, path)](scope, body)
    return None if answer is None else answer.status


class TestIdle:
    async def test_every_form_of_the_poll(self, service: Service) -> None:
        headers = device_headers("lonely")
        query = b"artifact_name=installed-0.1&device_type=" + DEVICE_TYPE.encode()
        v1 = json.dumps({**_PROVIDES, "rootfs-image.version": "1"}).encode()
        assert await _lean(service, "GET", NEXT_V1, headers=headers, query=query) == 204
        assert await _lean(service, "POST", NEXT_V1, headers=headers | _JSON, body=v1) == 204
        assert await _lean(service, "POST", NEXT_V2, headers=headers | _JSON, body=_V2_BODY) == 204
        # Without a content type the routes read JSON too.
        assert await _lean(service, "POST", NEXT_V2, headers=headers, body=_V2_BODY) == 204
        assert service.services.reach.hits == 4

    async def test_the_answer_is_the_routes(self, service: Service) -> None:
        response = await poll(service.client, "lonely")
        assert response.status_code == 204
        assert response.content == b""
        assert sorted(response.headers) == ["x-men-requestid"]
        asked = await service.client.post(
            NEXT_V2,
            content=_V2_BODY,
            headers={**device_headers("lonely"), **_JSON, "X-MEN-RequestID": "poll-7"},
        )
        assert asked.status_code == 204
        assert asked.headers["x-men-requestid"] == "poll-7"

    async def test_measured_under_the_routes_template(self, service: Service) -> None:
        series = {
            "route": NEXT_V2,
            "method": "POST",
            "status": "204",
        }
        sample = "fleetport_http_request_duration_seconds_count"
        before = Scrape((await service.client.get("/metrics")).text).value(sample, **series)
        for _ in range(3):
            assert (await poll(service.client, "lonely")).status_code == 204
        after = Scrape((await service.client.get("/metrics")).text).value(sample, **series)
        assert after - before == 3
        assert service.services.reach.hits == 3


class TestLeftToTheRoutes:
    async def test_malformed_polls(self, service: Service) -> None:
        device = device_headers("dev")
        cases: list[tuple[str, str, dict[str, str], bytes, bytes]] = [
            ("GET", NEXT_V1, device, b"", b"artifact_name=a"),
            ("GET", NEXT_V1, {}, b"", b"artifact_name=a&device_type=b"),
            ("POST", NEXT_V2, device | _JSON, b"{", b""),
            ("POST", NEXT_V2, device | _JSON, b"", b""),
            ("POST", NEXT_V2, device | _JSON, b'{"device_provides": {"device_type": 3}}', b""),
            ("POST", NEXT_V2, device | _JSON, b'{"device_provides": {"device_type": "x"}}', b""),
            ("POST", NEXT_V2, device | {"content-type": "text/plain"}, _V2_BODY, b""),
            ("POST", NEXT_V2, user_headers() | _JSON, _V2_BODY, b""),
            ("POST", NEXT_V2, _JSON, _V2_BODY, b""),
            ("POST", NEXT_V1, device | _JSON, b'{"artifact_name": "a"}', b""),
        ]
        for method, path, headers, body, query in cases:
            declined = await _lean(service, method, path, headers=headers, body=body, query=query)
            assert declined is None, (method, body, headers)
        assert service.services.reach.hits == 0
        # And the routes answer them as before.
        refused = await service.client.post(NEXT_V2, content=b"{", headers=device | _JSON)
        assert_error(refused, 400, "failed to decode request body")
        unauthorized = await service.client.post(NEXT_V2, content=_V2_BODY, headers=_JSON)
        assert_error(unauthorized, 401, "Authorization not present in header")

    async def test_a_device_some_deployment_lists(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        headers = device_headers("dev") | _JSON
        assert await _lean(service, "POST", NEXT_V2, headers=headers, body=_V2_BODY) is None
        # The route reads the body the lean route read first.
        response = await service.client.post(NEXT_V2, content=_V2_BODY, headers=headers)
        assert response.status_code == 200
        assert response.json()["id"] == deployment_id

    async def test_a_streamed_body_reaches_the_route_whole(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(_V2_BODY), 7):
                yield _V2_BODY[i : i + 7]

        headers = device_headers("dev") | _JSON
        response = await service.client.post(NEXT_V2, content=pieces(), headers=headers)
        assert response.status_code == 200
        assert response.json()["id"] == deployment_id

    async def test_a_large_body_is_left_unread(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        provides = {**_PROVIDES, **{f"data.{i}": "v" * 100 for i in range(900)}}
        body = json.dumps({"device_provides": provides}).encode()
        assert len(body) > 64 * 1024
        idle = await service.client.post(NEXT_V2, content=body, headers=device_headers("x") | _JSON)
        assert idle.status_code == 204
        listed = await service.client.post(
            NEXT_V2, content=body, headers=device_headers("dev") | _JSON
        )
        assert listed.status_code == 200
        assert listed.json()["id"] == deployment_id
