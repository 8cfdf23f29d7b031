"""Management API: a device's desired configuration, and deploying it through deployments."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from common.localstack.embedded import free_port
from services.deployments.artifact import ArtifactParser
from services.deviceconfig.config import Settings
from services.deviceconfig.main import create_app
from tests.auditlogs.live import live_auditlogs
from tests.conftest import ClientFactory
from tests.deployments.flows import poll
from tests.deviceconfig.conftest import (
    INTERNAL,
    MANAGEMENT,
    Deployments,
    FakeDeviceconnect,
    device_headers,
    user_headers,
)
from tests.toolkit import assert_error

DESIRED = {"timezone": "Europe/Oslo", "ntp": "pool.ntp.org", "dollar": "$"}


def _tenant() -> str:
    # Each test's deployments live in a tenant of their own in the shared deployments service.
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def _provision(client: httpx.AsyncClient, tenant: str) -> str:
    device_id = str(uuid.uuid4())
    response = await client.post(
        f"{INTERNAL}/tenants/{tenant}/devices", json={"device_id": device_id}
    )
    assert response.status_code == 201, response.text
    return device_id


async def _view(client: httpx.AsyncClient, device_id: str, tenant: str) -> dict[str, Any]:
    response = await client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers(tenant))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _set(client: httpx.AsyncClient, device_id: str, tenant: str, desired: Any) -> None:
    response = await client.put(
        f"{MANAGEMENT}/{device_id}", json=desired, headers=user_headers(tenant)
    )
    assert response.status_code == 204, response.text
    assert response.content == b""


async def _deploy(
    client: httpx.AsyncClient, device_id: str, tenant: str, body: Any
) -> httpx.Response:
    return await client.post(
        f"{MANAGEMENT}/{device_id}/deploy", json=body, headers=user_headers(tenant)
    )


async def _tenant_deployments(deployments: Deployments, tenant: str) -> list[dict[str, Any]]:
    response = await deployments.client.get(
        "/api/management/v1/deployments/deployments", headers=user_headers(tenant)
    )
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


class TestGetConfiguration:
    async def test_shape_after_provisioning(self, client: httpx.AsyncClient) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        view = await _view(client, device_id, tenant)
        assert set(view) == {"id", "configured", "reported", "updated_ts"}
        assert (view["id"], view["configured"], view["reported"]) == (device_id, {}, {})
        assert datetime.fromisoformat(view["updated_ts"]).tzinfo is not None

    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        response = await client.get(f"{MANAGEMENT}/{uuid.uuid4()}", headers=user_headers())
        assert_error(response, 404, "device does not exist")

    async def test_tenant_scoped(self, client: httpx.AsyncClient) -> None:
        device_id = await _provision(client, "tenant-a")
        response = await client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers("tenant-b"))
        assert_error(response, 404, "device does not exist")

    async def test_needs_a_user_token(self, client: httpx.AsyncClient) -> None:
        device_id = await _provision(client, "")
        response = await client.get(f"{MANAGEMENT}/{device_id}", headers=device_headers(device_id))
        assert_error(response, 401, "the token does not belong to a user")


class TestSetConfiguration:
    async def test_replaces_the_desired_configuration(self, client: httpx.AsyncClient) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        provisioned = datetime.fromisoformat((await _view(client, device_id, tenant))["updated_ts"])
        await _set(client, device_id, tenant, DESIRED)
        view = await _view(client, device_id, tenant)
        assert view["configured"] == DESIRED
        assert view["reported"] == {}
        assert datetime.fromisoformat(view["updated_ts"]) >= provisioned

        await _set(client, device_id, tenant, {"timezone": "UTC", "additional-key": ""})
        view = await _view(client, device_id, tenant)
        assert view["configured"] == {"timezone": "UTC", "additional-key": ""}

        await _set(client, device_id, tenant, {})
        assert (await _view(client, device_id, tenant))["configured"] == {}

    async def test_device_not_provisioned_yet(self, client: httpx.AsyncClient) -> None:
        device_id = str(uuid.uuid4())
        await _set(client, device_id, "", DESIRED)
        view = await _view(client, device_id, "")
        assert view["configured"] == DESIRED
        assert "updated_ts" in view
        # deviceauth's provisioning, arriving later, finds it recorded (and that is fine).
        again = await client.post(f"{INTERNAL}/tenants//devices", json={"device_id": device_id})
        assert_error(again, 409, "device already exists")
        assert (await _view(client, device_id, ""))["configured"] == DESIRED

    async def test_device_id_of_another_tenant(self, client: httpx.AsyncClient) -> None:
        device_id = await _provision(client, "tenant-a")
        response = await client.put(
            f"{MANAGEMENT}/{device_id}", json={"a": "b"}, headers=user_headers("tenant-b")
        )
        assert_error(response, 409, "device already exists")
        assert (await _view(client, device_id, "tenant-a"))["configured"] == {}


class TestDeployConfiguration:
    async def test_creates_a_configuration_deployment(
        self, client: httpx.AsyncClient, deployments: Deployments
    ) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        await _set(client, device_id, tenant, DESIRED)
        response = await _deploy(client, device_id, tenant, {"retries": 2})
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"deployment_id"}
        deployment_id = response.json()["deployment_id"]
        assert str(uuid.UUID(deployment_id)) == deployment_id
        assert (await _view(client, device_id, tenant))["deployment_id"] == deployment_id

        deployment = await deployments.deployment(deployment_id, tenant)
        assert deployment["type"] == "configuration"
        assert deployment["name"] == f"configuration-{deployment_id}"
        assert deployment["artifact_name"] == f"configuration-{deployment_id}"
        assert json.loads(deployment["configuration"]) == DESIRED
        assert deployment["retries"] == 2
        assert deployment["max_devices"] == 1
        assert deployment["status"] == "pending"
        assert deployment["statistics"]["status"]["pending"] == 1
        assert [d["id"] for d in await _tenant_deployments(deployments, tenant)] == [deployment_id]

    async def test_device_gets_the_mender_configure_artifact(
        self, client: httpx.AsyncClient, deployments: Deployments
    ) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        await _set(client, device_id, tenant, DESIRED)
        deployment_id = (await _deploy(client, device_id, tenant, {})).json()["deployment_id"]
        # Changing the desired configuration afterwards does not change what was deployed.
        await _set(client, device_id, tenant, {"timezone": "UTC"})

        instructions = await poll(deployments.client, device_id, tenant=tenant)
        assert instructions.status_code == 200, instructions.text
        body = instructions.json()
        assert body["id"] == deployment_id
        uri = body["artifact"]["source"]["uri"]
        assert "x-men-signature=" in uri
        download = await deployments.client.get(uri)
        assert download.status_code == 200
        parser = ArtifactParser()
        parser.feed(download.content)
        meta = parser.finish()
        assert meta.name == f"configuration-{deployment_id}"
        [payload] = meta.updates
        assert payload.type == "mender-configure"
        assert payload.meta_data == [DESIRED]

    async def test_nudges_the_device_through_deviceconnect(
        self, client: httpx.AsyncClient, deviceconnect: FakeDeviceconnect
    ) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        deviceconnect.connected.add(device_id)
        response = await _deploy(client, device_id, tenant, {"retries": 0})
        assert response.status_code == 200
        assert deviceconnect.nudges == [(tenant, device_id)]

    async def test_offline_or_failing_deviceconnect_does_not_matter(
        self,
        client: httpx.AsyncClient,
        deviceconnect: FakeDeviceconnect,
        deployments: Deployments,
    ) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        offline = await _deploy(client, device_id, tenant, {})
        assert offline.status_code == 200
        deviceconnect.broken = True
        failing = await _deploy(client, device_id, tenant, {})
        assert failing.status_code == 200
        # One call each: a nudge is never retried.
        assert deviceconnect.nudges == [(tenant, device_id)] * 2
        created = {d["id"] for d in await _tenant_deployments(deployments, tenant)}
        assert created == {offline.json()["deployment_id"], failing.json()["deployment_id"]}
        view = await _view(client, device_id, tenant)
        assert view["deployment_id"] == failing.json()["deployment_id"]

    async def test_unknown_device(
        self, client: httpx.AsyncClient, deployments: Deployments, deviceconnect: FakeDeviceconnect
    ) -> None:
        tenant = _tenant()
        response = await _deploy(client, str(uuid.uuid4()), tenant, {})
        assert_error(response, 404, "device does not exist")
        assert await _tenant_deployments(deployments, tenant) == []
        assert deviceconnect.nudges == []

    @pytest.mark.parametrize("retries", [-1, "1", 1.5, True])
    async def test_bad_retries(
        self, client: httpx.AsyncClient, deployments: Deployments, retries: Any
    ) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        response = await _deploy(client, device_id, tenant, {"retries": retries})
        assert response.status_code == 400
        assert response.json()["error"].startswith("invalid request: retries: ")
        assert await _tenant_deployments(deployments, tenant) == []
        assert "deployment_id" not in await _view(client, device_id, tenant)

    async def test_body_required(self, client: httpx.AsyncClient) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        response = await client.post(
            f"{MANAGEMENT}/{device_id}/deploy", headers=user_headers(tenant)
        )
        assert_error(response, 400, "invalid request: Field required")

    async def test_null_retries_is_none(
        self, client: httpx.AsyncClient, deployments: Deployments
    ) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        response = await _deploy(client, device_id, tenant, {"retries": None})
        assert response.status_code == 200
        deployment = await deployments.deployment(response.json()["deployment_id"], tenant)
        assert "retries" not in deployment

    async def test_update_control_map_is_enterprise(
        self, client: httpx.AsyncClient, deployments: Deployments
    ) -> None:
        tenant = _tenant()
        device_id = await _provision(client, tenant)
        response = await _deploy(
            client, device_id, tenant, {"update_control_map": {"priority": 1, "states": {}}}
        )
        assert_error(
            response,
            403,
            "forbidden: update control map is available only for Enterprise customers",
        )
        assert await _tenant_deployments(deployments, tenant) == []
        empty_map = await _deploy(client, device_id, tenant, {"update_control_map": {}})
        assert empty_map.status_code == 200


@pytest.fixture
async def bare_client(
    request: pytest.FixtureRequest, mongo_url: str, db_name: str, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """deviceconfig whose deployments peer is `request.param` (None: not deployed)."""
    settings = Settings(
        mongo_url=mongo_url, mongo_db=db_name, dev_mode=True, deployments_addr=request.param
    )
    async with asgi_client(create_app(settings)) as c:
        yield c


class TestDeployWithoutDeployments:
    @pytest.mark.parametrize("bare_client", [None], indirect=True)
    async def test_not_configured(self, bare_client: httpx.AsyncClient) -> None:
        device_id = await _provision(bare_client, "")
        await _set(bare_client, device_id, "", DESIRED)
        response = await _deploy(bare_client, device_id, "", {})
        assert_error(response, 503, "deployments is not configured")
        assert "deployment_id" not in await _view(bare_client, device_id, "")

    @pytest.mark.parametrize("bare_client", [f"http://127.0.0.1:{free_port()}"], indirect=True)
    async def test_unreachable(self, bare_client: httpx.AsyncClient) -> None:
        device_id = await _provision(bare_client, "")
        response = await _deploy(bare_client, device_id, "", {})
        assert response.status_code == 503
        assert response.json()["error"].startswith("deployments is unreachable: ")
        assert "deployment_id" not in await _view(bare_client, device_id, "")


class TestAuditEvents:
    async def test_setting_and_deploying_are_recorded(
        self, settings: Settings, asgi_client: ClientFactory, mongo_url: str, db_name: str
    ) -> None:
        async with live_auditlogs(mongo_url, f"{db_name}_audit") as auditlogs:
            with_audit = settings.model_copy(update={"auditlogs_addr": auditlogs.url})
            async with asgi_client(create_app(with_audit)) as client:
                tenant = _tenant()
                device_id = await _provision(client, tenant)
                headers = user_headers(tenant, user_id="operator-1")
                r = await client.put(f"{MANAGEMENT}/{device_id}", json=DESIRED, headers=headers)
                assert r.status_code == 204, r.text
                r = await client.post(
                    f"{MANAGEMENT}/{device_id}/deploy", json={"retries": 0}, headers=headers
                )
                assert r.status_code == 200, r.text
                # A peer's change (iot-manager's merge) is no user's: no event.
                r = await client.patch(
                    f"{INTERNAL}/tenants/{tenant}/configurations/device/{device_id}",
                    json={"extra": "1"},
                )
                assert r.status_code == 204, r.text
                events = await auditlogs.wait_for(2, tenant)
        assert [(e["action"], e["object"]) for e in events] == [
            ("set_configuration", {"id": device_id, "type": "device"}),
            ("deploy_configuration", {"id": device_id, "type": "device"}),
        ]
        assert {e["actor"]["id"] for e in events} == {"operator-1"}
        assert json.loads(events[0]["change"]) == DESIRED
        assert json.loads(events[1]["change"]) == DESIRED
