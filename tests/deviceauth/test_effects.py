"""Cross-service effects reach real peer servers through the outbox, in order, despite outages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.deviceauth.main import create_app
from tests.conftest import ClientFactory
from tests.deviceauth.conftest import MGMT, USER, FakeDevice, admit, register
from tests.toolkit import LiveServer, eventually

Received = tuple[str, str, Any]


class _Peer(LiveServer):
    """A real HTTP server playing every peer: it records requests and answers like them."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.request_ids: list[str] = []
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["POST", "PATCH", "DELETE", "PUT"])
        async def record(path: str, request: Request) -> Response:
            body = await request.body()
            self.received.append(
                (request.method, request.url.path, json.loads(body) if body else None)
            )
            self.request_ids.append(request.headers.get("X-MEN-RequestID", ""))
            if request.method == "DELETE":
                return Response(status_code=204)
            if path.endswith("/devices") and request.method == "POST":
                return Response(status_code=201)
            return Response(status_code=200)

        super().__init__(app)

    def to(self, prefix: str) -> list[Received]:
        """What arrived under one peer's API prefix, in arrival order."""
        return [r for r in self.received if r[1].startswith(prefix)]


@pytest.fixture
async def peer() -> AsyncIterator[_Peer]:
    async with _Peer() as server:
        yield server


INVENTORY = "/api/internal/v1/inventory/tenants/"
DEVICECONNECT = "/api/internal/v1/deviceconnect/tenants/"
DEVICECONFIG = "/api/internal/v1/deviceconfig/tenants/"
DEPLOYMENTS = "/api/internal/v1/deployments/tenants/"
IOT_MANAGER = "/api/internal/v1/iot-manager/tenants/"


class TestEffectsArrive:
    async def test_lifecycle_of_a_device(
        self,
        peer: _Peer,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device.identity = {"mac": "02:00:00:00:00:07", "sn": 5, "status": "spoofed"}
        settings = make_settings(
            inventory_addr=peer.url,
            deployments_addr=peer.url,
            deviceconnect_addr=peer.url,
            deviceconfig_addr=peer.url,
            iot_manager_addr=peer.url,
        )
        async with asgi_client(create_app(settings)) as client:
            device_id, auth_id, _ = await admit(client, device)
            r = await client.delete(
                f"{MGMT}/devices/{device_id}", headers={**USER, "X-MEN-RequestID": "decom-1"}
            )
            assert r.status_code == 204

            async def delivered() -> bool:
                # Acknowledged deliveries leave the outbox.
                return await mongo[db_name]["outbox"].count_documents({}) == 0

            await eventually(delivered, what="every effect delivered")
            assert len(peer.received) == 14

            inventory = f"{INVENTORY}/device/{device_id}"
            assert peer.to(INVENTORY) == [
                (
                    "PATCH",
                    f"{inventory}/attribute/scope/identity",
                    [
                        {"name": "mac", "value": "02:00:00:00:00:07", "scope": "identity"},
                        {"name": "sn", "value": 5, "scope": "identity"},
                    ],
                ),
                ("POST", f"{INVENTORY}/devices/status/pending", [{"id": device_id, "revision": 1}]),
                (
                    "POST",
                    f"{INVENTORY}/devices/status/accepted",
                    [{"id": device_id, "revision": 2}],
                ),
                ("PATCH", f"{inventory}/attribute/scope/system", peer.to(INVENTORY)[3][2]),
                ("DELETE", f"{INVENTORY}/devices/{device_id}", None),
            ]
            [check_in] = peer.to(INVENTORY)[3][2]
            assert check_in["name"] == "check_in_time"
            assert peer.to(DEVICECONNECT) == [
                ("POST", f"{DEVICECONNECT}/devices", [{"device_id": device_id}]),
                ("DELETE", f"{DEVICECONNECT}/devices/{device_id}", None),
            ]
            assert peer.to(DEVICECONFIG) == [
                ("POST", f"{DEVICECONFIG}/devices", [{"device_id": device_id}]),
                ("DELETE", f"{DEVICECONFIG}/devices/{device_id}", None),
            ]
            assert peer.to(DEPLOYMENTS) == [
                ("DELETE", f"{DEPLOYMENTS}/deployments/devices/{device_id}", None)
            ]
            # iot-manager hears of the status changes and is told to provision the device
            # (before it hears that it is accepted, as in Mender) and to forget it.
            [provisioned] = peer.to(IOT_MANAGER)[1][2]
            assert peer.to(IOT_MANAGER) == [
                ("PUT", f"{IOT_MANAGER}/bulk/devices/status/pending", [{"id": device_id}]),
                ("POST", f"{IOT_MANAGER}/devices", [provisioned]),
                ("PUT", f"{IOT_MANAGER}/bulk/devices/status/accepted", [{"id": device_id}]),
                ("DELETE", f"{IOT_MANAGER}/devices/{device_id}", None),
            ]
            [auth_set] = provisioned.pop("auth_sets")
            assert provisioned == {
                "id": device_id,
                "status": "accepted",
                "created_ts": provisioned["created_ts"],
            }
            assert provisioned["created_ts"].endswith("Z")
            assert auth_set == {
                "id": auth_id,
                "device_id": device_id,
                "identity_data": device.identity,
                "pubkey": auth_set["pubkey"],
                "status": "accepted",
                "ts": auth_set["ts"],
            }
            assert "BEGIN PUBLIC KEY" in auth_set["pubkey"]
            # Each effect carries the id of the request that caused it.
            assert peer.request_ids[peer.received.index(peer.to(DEPLOYMENTS)[0])] == "decom-1"

    async def test_reaccepting_does_not_provision_again(
        self,
        peer: _Peer,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device: FakeDevice,
    ) -> None:
        settings = make_settings(inventory_addr=peer.url, deviceconnect_addr=peer.url)
        async with asgi_client(create_app(settings)) as client:
            device_id, auth_id, _ = await admit(client, device)
            path = f"{MGMT}/devices/{device_id}/auth/{auth_id}/status"
            await client.put(path, json={"status": "rejected"}, headers=USER)
            await client.put(path, json={"status": "accepted"}, headers=USER)
            await eventually(
                lambda: (
                    len(peer.to(f"{INVENTORY}/devices/status/")) == 4
                    and len(peer.to(DEVICECONNECT)) == 2
                )
            )
        statuses = [
            (r[1].rsplit("/", 1)[1], r[2][0]["revision"])
            for r in peer.received
            if "/status/" in r[1]
        ]
        assert statuses == [("pending", 1), ("accepted", 2), ("rejected", 3), ("accepted", 4)]
        # Provisioned once; its connection cut when it was rejected.
        assert peer.to(DEVICECONNECT) == [
            ("POST", f"{DEVICECONNECT}/devices", [{"device_id": device_id}]),
            ("POST", f"{DEVICECONNECT}/devices/{device_id}/disconnect", None),
        ]

    async def test_preauthorized_device(
        self,
        peer: _Peer,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device: FakeDevice,
    ) -> None:
        async with asgi_client(create_app(make_settings(inventory_addr=peer.url))) as client:
            r = await client.post(
                f"{MGMT}/devices",
                json={"identity_data": device.identity, "pubkey": device.pubkey},
                headers=USER,
            )
            device_id = r.headers["Location"].removeprefix("devices/")
            await eventually(lambda: len(peer.received) == 2)
        assert peer.received == [
            (
                "PATCH",
                f"{INVENTORY}/device/{device_id}/attribute/scope/identity",
                [{"name": "mac", "value": device.identity["mac"], "scope": "identity"}],
            ),
            (
                "POST",
                f"{INVENTORY}/devices/status/preauthorized",
                [{"id": device_id, "revision": 1}],
            ),
        ]

    async def test_dismissed_preauthorized_device(
        self,
        peer: _Peer,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device: FakeDevice,
    ) -> None:
        settings = make_settings(iot_manager_addr=peer.url)
        async with asgi_client(create_app(settings)) as client:
            r = await client.post(
                f"{MGMT}/devices",
                json={"identity_data": device.identity, "pubkey": device.pubkey},
                headers=USER,
            )
            device_id = r.headers["Location"].removeprefix("devices/")
            r = await client.get(f"{MGMT}/devices/{device_id}", headers=USER)
            [auth_set] = r.json()["auth_sets"]
            r = await client.delete(
                f"{MGMT}/devices/{device_id}/auth/{auth_set['id']}", headers=USER
            )
            assert r.status_code == 204
            await eventually(lambda: len(peer.received) == 2)
        # As Mender's workflow has it, iot-manager hears a "decommissioned" status.
        assert peer.received == [
            ("PUT", f"{IOT_MANAGER}/bulk/devices/status/preauthorized", [{"id": device_id}]),
            ("PUT", f"{IOT_MANAGER}/bulk/devices/status/decommissioned", [{"id": device_id}]),
        ]


class TestPeerDown:
    async def test_effects_wait_for_the_peer(
        self,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        down = _Peer()  # its port is reserved but nothing listens yet
        outbox = mongo[db_name]["outbox"]
        settings = make_settings(inventory_addr=down.url)
        async with asgi_client(create_app(settings)) as client:
            view = await register(client, device)
            r = await client.delete(f"{MGMT}/devices/{view['id']}", headers=USER)
            assert r.status_code == 204

            async def tried() -> bool:
                head = await outbox.find_one({"peer": "inventory"}, sort=[("_id", 1)])
                return head is not None and head["attempts"] >= 1

            await eventually(tried)
            await down.start()

            async def delivered() -> bool:
                return await outbox.count_documents({"peer": "inventory"}) == 0

            try:
                await eventually(delivered, within=15, what="inventory's effects delivered")
            finally:
                await down.stop()
        assert [r[0] for r in down.received] == ["PATCH", "POST", "DELETE"]
        # Nothing was queued for the peers that are not deployed.
        assert await outbox.count_documents({}) == 0
