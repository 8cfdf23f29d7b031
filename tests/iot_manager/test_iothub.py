"""Azure IoT Hub: the device lifecycle mirrored as device identities, state as twins.

The stand-in speaks the hub's REST API over HTTPS (a test CA) and checks every shared
access signature.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import httpx
import pytest

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
from tests.iot_manager.iothub import Certificates, HubStandIn, make_certificates
from tests.toolkit import LiveServer, eventually

POLICY: Final = "iothubowner"
KEY: Final = b"hub-shared-access-key-0123456789"


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("hub-tls"))


@pytest.fixture
async def hub(certificates: Certificates) -> AsyncIterator[tuple[HubStandIn, str]]:
    """The stand-in and its connection string (HostName=localhost:<port>)."""
    holder: list[HubStandIn] = []
    server = LiveServer(
        _Lazy(holder), tls=(str(certificates.cert), str(certificates.key)), host="localhost"
    )
    host = f"localhost:{server.port}"
    holder.append(HubStandIn(host=host, policy=POLICY, key=KEY))
    await server.start()
    try:
        connection_string = (
            f"HostName={host};SharedAccessKeyName={POLICY};"
            f"SharedAccessKey={base64.b64encode(KEY).decode()}"
        )
        yield holder[0], connection_string
    finally:
        await server.stop()


class _Lazy:
    """The stand-in's app, built once the stand-in knows its own port."""

    def __init__(self, holder: list[HubStandIn]) -> None:
        self._holder = holder
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self._holder[0].app()
        await self._app(scope, receive, send)


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings],
    asgi_client: ClientFactory,
    certificates: Certificates,
    hub: tuple[HubStandIn, str],
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, trusting the stand-in's CA; closed before the stand-in stops."""
    app = create_app(make_settings(ca_file=certificates.ca), environ={})
    async with asgi_client(app) as c:
        yield c


def _integration(connection_string: str) -> dict[str, Any]:
    return {
        "provider": "iot-hub",
        "credentials": {"type": "sas", "connection_string": connection_string},
    }


async def _settled(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The events once `count` of them have a delivery outcome."""

    async def done() -> bool:
        events = await list_events(client)
        return sum(1 for e in events if e.get("delivery_statuses")) == count

    await eventually(done)
    return await list_events(client)


async def _provisioned(client: httpx.AsyncClient, connection_string: str) -> str:
    """An IoT Hub integration with dev-1 provisioned to it; its id."""
    integration_id = await create_integration(client, _integration(connection_string))
    await client.post(f"{INTERNAL}/tenants//devices", json={"id": "dev-1"})
    await _settled(client, 1)
    return integration_id


class TestLifecycle:
    async def test_identity_follows_the_device(
        self, client: httpx.AsyncClient, hub: tuple[HubStandIn, str]
    ) -> None:
        stand_in, connection_string = hub
        integration_id = await create_integration(client, _integration(connection_string))
        r = await client.post(f"{INTERNAL}/tenants//devices", json={"id": "dev-1"})
        assert r.status_code == 202
        await _settled(client, 1)
        device = stand_in.devices["dev-1"]
        assert device["status"] == "enabled"
        assert device["authentication"]["type"] == "sas"
        assert stand_in.twins["dev-1"]["tags"] == {"mender": True}

        r = await client.put(
            f"{INTERNAL}/tenants//bulk/devices/status/rejected", json=[{"id": "dev-1"}]
        )
        assert r.status_code == 202
        await _settled(client, 2)
        assert stand_in.devices["dev-1"]["status"] == "disabled"
        # The identity was updated, not replaced: its keys are the ones it was given.
        assert stand_in.devices["dev-1"]["authentication"] == device["authentication"]

        r = await client.delete(f"{INTERNAL}/tenants//devices/dev-1")
        assert r.status_code == 202
        events = await _settled(client, 3)
        assert "dev-1" not in stand_in.devices
        for event in events:
            assert event["delivery_statuses"] == [
                {"integration_id": integration_id, "success": True}
            ]

    async def test_a_wrong_key_is_refused_once(
        self,
        client: httpx.AsyncClient,
        hub: tuple[HubStandIn, str],
        drained: Drained,
    ) -> None:
        stand_in, connection_string = hub
        wrong = connection_string.rsplit("=", 2)[0] + "=" + base64.b64encode(b"x" * 32).decode()
        await create_integration(client, _integration(wrong))
        r = await client.post(f"{INTERNAL}/tenants//devices", json={"id": "dev-1"})
        assert r.status_code == 202
        [event] = await _settled(client, 1)
        [status] = event["delivery_statuses"]
        assert status["success"] is False
        assert status["status_code"] == 401
        assert "IotHubUnauthorizedAccess" in status["error"]
        assert stand_in.devices == {}
        await drained()
        assert stand_in.requests == [("GET", "/devices/dev-1")]


class TestDeviceState:
    async def test_desired_replaced_reported_read(
        self, client: httpx.AsyncClient, hub: tuple[HubStandIn, str]
    ) -> None:
        stand_in, connection_string = hub
        integration_id = await _provisioned(client, connection_string)
        url = f"{MGMT}/devices/dev-1/state/{integration_id}"

        r = await client.get(url, headers=USER)
        assert r.status_code == 200
        assert r.json() == {"desired": {}, "reported": {}}

        r = await client.put(url, json={"desired": {"fan": "on", "level": 3}}, headers=USER)
        assert r.status_code == 200
        assert r.json() == {"desired": {"fan": "on", "level": 3}, "reported": {}}
        stand_in.set_reported("dev-1", {"fan": "off"})
        r = await client.put(url, json={"desired": {"fan": "on"}}, headers=USER)
        assert r.json() == {"desired": {"fan": "on"}, "reported": {"fan": "off"}}
        # The twin's tags survive a replaced desired state.
        assert stand_in.twins["dev-1"]["tags"] == {"mender": True}

        r = await client.get(f"{MGMT}/devices/dev-1/state", headers=USER)
        assert r.json() == {integration_id: {"desired": {"fan": "on"}, "reported": {"fan": "off"}}}

    async def test_concurrent_change(
        self, client: httpx.AsyncClient, hub: tuple[HubStandIn, str]
    ) -> None:
        stand_in, connection_string = hub
        integration_id = await _provisioned(client, connection_string)
        stand_in.race_next_twin_read = True
        r = await client.put(
            f"{MGMT}/devices/dev-1/state/{integration_id}", json={"desired": {"a": 1}}, headers=USER
        )
        assert r.status_code == 409
        assert r.json()["error"] == "conflict when updating the device state"
        assert stand_in.twins["dev-1"]["properties"]["desired"] == {"$metadata": {}, "$version": 1}


class TestHostChecks:
    async def test_reserved_hub_address(
        self,
        make_settings: Callable[..., Settings],
        asgi_client: ClientFactory,
        hub: tuple[HubStandIn, str],
    ) -> None:
        _, connection_string = hub
        app = create_app(make_settings(domain_skipverify=False), environ={})
        async with asgi_client(app) as strict:
            r = await strict.post(
                f"{MGMT}/integrations", json=_integration(connection_string), headers=USER
            )
            assert r.status_code == 400
            assert r.json()["error"].startswith("invalid IoT Hub host: host 'localhost' resolves")
            assert (await strict.get(f"{MGMT}/integrations", headers=USER)).json() == []
