"""AWS IoT Core: the device lifecycle mirrored as things and certificates, state as shadows.

The stand-in is moto in server mode: the real AWS REST protocol, on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from common.localstack.embedded import free_port
from services.iot_manager.config import Settings
from services.iot_manager.main import create_app
from tests.conftest import ClientFactory
from tests.iot_manager.conftest import (
    INTERNAL,
    MGMT,
    USER,
    Drained,
    create_integration,
    list_events,
)
from tests.toolkit import eventually

REGION: Final = "eu-west-1"
POLICY: Final = "mender-devices"
KEYS: Final = {"aws_access_key_id": "AKIATEST", "aws_secret_access_key": "test-secret"}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """An AWS stand-in (moto's server) for the session."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_url: str) -> Any:
    """The IoT registry as an operator sees it, emptied and given the devices' policy."""
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    iot = boto3.client("iot", region_name=REGION, endpoint_url=moto_url, **KEYS)
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*"}]}
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(document))
    return iot


@pytest.fixture
def shadows(moto_url: str) -> Any:
    """The device shadows as a device sees them."""
    return boto3.client("iot-data", region_name=REGION, endpoint_url=moto_url, **KEYS)


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], asgi_client: ClientFactory, moto_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(aws_endpoint_url=moto_url), environ={})
    async with asgi_client(app) as c:
        yield c


def _integration(policy: str = POLICY) -> dict[str, Any]:
    keys = {
        "access_key_id": KEYS["aws_access_key_id"],
        "secret_access_key": KEYS["aws_secret_access_key"],
        "region": REGION,
        "device_policy_name": policy,
    }
    return {"provider": "iot-core", "credentials": {"type": "aws", "aws": keys}}


def _certificate(aws: Any, device_id: str) -> dict[str, Any] | None:
    """The thing's one certificate, or None when there is no such thing."""
    try:
        principals = aws.list_thing_principals(thingName=device_id)["principals"]
    except aws.exceptions.ResourceNotFoundException:
        return None
    [arn] = principals
    found: dict[str, dict[str, Any]] = aws.describe_certificate(certificateId=arn.rsplit("/", 1)[1])
    return found["certificateDescription"]


async def _delivered(client: httpx.AsyncClient, count: int) -> None:
    """Wait until `count` events are delivered."""

    async def done() -> bool:
        events = await list_events(client)
        delivered = [e for e in events if e.get("delivery_statuses", [{}])[0].get("success")]
        return len(delivered) == count

    await eventually(done)


async def _provision(client: httpx.AsyncClient, device_id: str) -> None:
    r = await client.post(
        f"{INTERNAL}/tenants//devices", json={"id": device_id, "status": "accepted"}
    )
    assert r.status_code == 202


async def _set_status(client: httpx.AsyncClient, device_id: str, status: str) -> None:
    r = await client.put(
        f"{INTERNAL}/tenants//bulk/devices/status/{status}", json=[{"id": device_id}]
    )
    assert r.status_code == 202


async def _provisioned(client: httpx.AsyncClient) -> str:
    """An IoT Core integration with dev-1 provisioned to it; its id."""
    integration_id = await create_integration(client, _integration())
    await _provision(client, "dev-1")
    await _delivered(client, 1)
    return integration_id


class TestLifecycle:
    async def test_thing_and_certificate_follow_the_device(
        self, client: httpx.AsyncClient, aws: Any
    ) -> None:
        integration_id = await create_integration(client, _integration())
        await _provision(client, "dev-1")
        await _delivered(client, 1)
        cert = _certificate(aws, "dev-1")
        assert cert is not None
        assert cert["status"] == "ACTIVE"
        attached = aws.list_attached_policies(target=cert["certificateArn"])["policies"]
        assert [p["policyName"] for p in attached] == [POLICY]
        [event] = await list_events(client)
        assert event["delivery_statuses"] == [{"integration_id": integration_id, "success": True}]

        await _set_status(client, "dev-1", "rejected")
        await _delivered(client, 2)
        deactivated = _certificate(aws, "dev-1")
        assert deactivated is not None
        assert deactivated["certificateId"] == cert["certificateId"]
        assert deactivated["status"] == "INACTIVE"

        await _set_status(client, "dev-1", "accepted")
        await _delivered(client, 3)
        assert (_certificate(aws, "dev-1") or {})["status"] == "ACTIVE"

        # A device the integration never provisioned is not its business.
        await _set_status(client, "dev-2", "rejected")
        r = await client.delete(f"{INTERNAL}/tenants//devices/dev-1")
        assert r.status_code == 202
        await _delivered(client, 4)
        assert _certificate(aws, "dev-1") is None
        assert aws.list_certificates()["certificates"] == []
        assert _certificate(aws, "dev-2") is None
        # Nor is it logged.
        assert {e["data"]["id"] for e in await list_events(client)} == {"dev-1"}

        r = await client.get(f"{MGMT}/devices/dev-1/state", headers=USER)
        assert r.status_code == 404
        assert r.json()["error"] == "device not found"

    async def test_a_failing_step_is_retried(
        self, client: httpx.AsyncClient, aws: Any, drained: Drained
    ) -> None:
        await create_integration(client, _integration(policy="not-yet"))
        await _provision(client, "dev-1")

        async def failed() -> bool:
            events = await list_events(client)
            return bool(events and events[0].get("delivery_statuses"))

        await eventually(failed)
        [event] = await list_events(client)
        failure = event["delivery_statuses"][-1]
        assert failure["success"] is False
        assert failure["status_code"] == 404
        assert failure["error"].startswith("AWS IoT: ResourceNotFoundException")

        aws.create_policy(policyName="not-yet", policyDocument=json.dumps({"Statement": []}))
        await _delivered(client, 1)
        cert = _certificate(aws, "dev-1")
        assert cert is not None
        assert cert["status"] == "ACTIVE"
        attached = aws.list_attached_policies(target=cert["certificateArn"])["policies"]
        assert [p["policyName"] for p in attached] == ["not-yet"]
        await drained()

    async def test_an_integration_in_use_stays(self, client: httpx.AsyncClient, aws: Any) -> None:
        integration_id = await _provisioned(client)
        r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
        assert r.status_code == 409
        assert r.json()["error"] == "cannot remove integration in use by devices"
        r = await client.delete(f"{INTERNAL}/tenants//devices/dev-1")
        await _delivered(client, 2)
        r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
        assert r.status_code == 204


class TestDeviceState:
    async def test_desired_state_is_replaced_and_reported_state_read(
        self, client: httpx.AsyncClient, aws: Any, shadows: Any
    ) -> None:
        integration_id = await _provisioned(client)
        state_url = f"{MGMT}/devices/dev-1/state/{integration_id}"

        r = await client.get(state_url, headers=USER)
        assert r.status_code == 200
        assert r.json() == {"desired": {}, "reported": {}}

        r = await client.put(state_url, json={"desired": {"a": 1, "b": {"c": 2}}}, headers=USER)
        assert r.status_code == 200
        assert r.json() == {"desired": {"a": 1, "b": {"c": 2}}, "reported": {}}

        shadows.update_thing_shadow(
            thingName="dev-1", payload=json.dumps({"state": {"reported": {"a": 1}}}).encode()
        )
        r = await client.put(
            state_url, json={"desired": {"b": {"d": 3}}, "reported": {"x": 1}}, headers=USER
        )
        assert r.status_code == 200
        assert r.json() == {"desired": {"b": {"d": 3}}, "reported": {"a": 1}}
        stored = json.loads(shadows.get_thing_shadow(thingName="dev-1")["payload"].read())
        assert stored["state"]["desired"] == {"b": {"d": 3}}

        r = await client.get(f"{MGMT}/devices/dev-1/state", headers=USER)
        assert r.status_code == 200
        assert r.json() == {integration_id: {"desired": {"b": {"d": 3}}, "reported": {"a": 1}}}

    async def test_unknown_device_or_integration(self, client: httpx.AsyncClient, aws: Any) -> None:
        integration_id = await _provisioned(client)
        other = "5e9c3a4e-0000-4000-8000-000000000000"
        for url in (
            f"{MGMT}/devices/dev-2/state/{integration_id}",
            f"{MGMT}/devices/dev-1/state/{other}",
        ):
            r = await client.get(url, headers=USER)
            assert r.status_code == 404
            assert r.json()["error"] == "integration not found"
            r = await client.put(url, json={"desired": {"a": 1}}, headers=USER)
            assert r.status_code == 404
        r = await client.get(f"{MGMT}/devices/dev-1/state/nope", headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == "integration ID is not a valid UUID"

    async def test_bad_body(self, client: httpx.AsyncClient, aws: Any) -> None:
        integration_id = await _provisioned(client)
        r = await client.put(
            f"{MGMT}/devices/dev-1/state/{integration_id}", json={"desired": [1]}, headers=USER
        )
        assert r.status_code == 400
        assert r.json()["error"] == "invalid request: desired: Input should be a valid dictionary"

    async def test_cloud_failure(
        self,
        make_settings: Callable[..., Settings],
        asgi_client: ClientFactory,
        client: httpx.AsyncClient,
        aws: Any,
    ) -> None:
        integration_id = await _provisioned(client)
        unreachable = f"http://127.0.0.1:{free_port()}"
        app = create_app(make_settings(aws_endpoint_url=unreachable), environ={})
        async with asgi_client(app) as broken:
            r = await broken.get(f"{MGMT}/devices/dev-1/state/{integration_id}", headers=USER)
        assert r.status_code == 502
        assert r.json()["error"].startswith("AWS IoT: EndpointConnectionError")
