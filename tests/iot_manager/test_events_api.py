"""The device lifecycle from deviceauth becomes events, delivered to webhooks with retries."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, Final

import httpx
import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.iot_manager.config import Settings
from services.iot_manager.main import create_app
from tests.conftest import ClientFactory
from tests.iot_manager.conftest import (
    INTERNAL,
    MGMT,
    SECRET,
    USER,
    Drained,
    Receiver,
    create_integration,
    list_events,
    mender_signature,
    user_headers,
    webhook,
)
from tests.toolkit import eventually

DEVICES: Final = f"{INTERNAL}/tenants//devices"
PUBKEY: Final = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEA18UTNP3MwIpKGZDv25V8ExIlqYjKs7C9cKI2KQDDFqc=\n"
    "-----END PUBLIC KEY-----\n"
)
RFC3339: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _device(device_id: str) -> dict[str, Any]:
    return {
        "id": device_id,
        "status": "accepted",
        "revision": 2,
        "created_ts": "2026-11-30T10:00:00Z",
        "auth_sets": [
            {
                "id": "70338f23-b4e6-49ef-a126-097ce6a44140",
                "device_id": device_id,
                "identity_data": {"mac": "02:00:00:00:00:01"},
                "pubkey": PUBKEY,
                "status": "accepted",
                "ts": "2026-11-30T10:00:01Z",
            }
        ],
    }


async def _provision(client: httpx.AsyncClient, device_id: str, **headers: str) -> None:
    r = await client.post(DEVICES, json=_device(device_id), headers=headers)
    assert r.status_code == 202, r.text
    assert r.content == b""


async def _set_status(client: httpx.AsyncClient, status: str, *device_ids: str) -> None:
    r = await client.put(
        f"{INTERNAL}/tenants//bulk/devices/status/{status}", json=[{"id": d} for d in device_ids]
    )
    assert r.status_code == 202, r.text


async def _decommission(client: httpx.AsyncClient, device_id: str) -> None:
    r = await client.delete(f"{DEVICES}/{device_id}")
    assert r.status_code == 202, r.text


class TestWebhookDelivery:
    async def test_provisioned_device_is_posted_signed(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        integration_id = await create_integration(client, webhook(receiver.url))
        await _provision(client, "dev-1")
        await eventually(lambda: len(receiver.deliveries) == 1)

        [delivery] = receiver.deliveries
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["x-men-algorithm"] == "MEN-HMAC-SHA256-Payload"
        assert delivery.headers["x-men-signature"] == mender_signature(SECRET, delivery.body)
        event = delivery.event
        assert list(event) == ["id", "type", "data", "time"]
        assert str(uuid.UUID(event["id"])) == event["id"]
        assert event["type"] == "device-provisioned"
        assert RFC3339.fullmatch(event["time"])
        expected = _device("dev-1")
        del expected["revision"]
        expected["created_ts"] = "2026-11-30T10:00:00Z"
        assert event["data"] == expected

        async def delivered() -> bool:
            [logged] = await list_events(client)
            return "delivery_statuses" in logged

        await eventually(delivered)
        [logged] = await list_events(client)
        assert logged == {
            **event,
            "delivery_statuses": [
                {"integration_id": integration_id, "success": True, "status_code": 200}
            ],
        }

    async def test_without_a_secret_nothing_is_signed(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        await create_integration(client, webhook(receiver.url, secret=None))
        await _decommission(client, "dev-1")
        await eventually(lambda: len(receiver.deliveries) == 1)
        headers = receiver.deliveries[0].headers
        assert "x-men-signature" not in headers
        assert "x-men-algorithm" not in headers
        assert receiver.events()[0]["data"] == {"id": "dev-1"}

    async def test_lifecycle_in_order(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        await create_integration(client, webhook(receiver.url))
        await _set_status(client, "pending", "dev-1")
        await _provision(client, "dev-1")
        await _set_status(client, "accepted", "dev-1", "dev-2")
        await _decommission(client, "dev-1")
        await eventually(lambda: len(receiver.deliveries) == 5)
        assert [(e["type"], e["data"]) for e in receiver.events()] == [
            ("device-status-changed", {"id": "dev-1", "status": "pending"}),
            ("device-provisioned", receiver.events()[1]["data"]),
            ("device-status-changed", {"id": "dev-1", "status": "accepted"}),
            ("device-status-changed", {"id": "dev-2", "status": "accepted"}),
            ("device-decommissioned", {"id": "dev-1"}),
        ]
        for delivery in receiver.deliveries:
            assert delivery.headers["x-men-signature"] == mender_signature(SECRET, delivery.body)
        await drained()
        # The log lists them newest first (events of one request share their time).
        logged = await list_events(client)
        assert {e["id"] for e in logged} == {e["id"] for e in receiver.events()}
        times = [e["time"] for e in logged]
        assert times == sorted(times, reverse=True)
        assert logged[0]["type"] == "device-decommissioned"

    async def test_receiver_failing_then_back(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        integration_id = await create_integration(client, webhook(receiver.url))
        receiver.status = 503
        await _provision(client, "dev-1")
        await _decommission(client, "dev-1")

        async def failed_twice() -> bool:
            events = await list_events(client)
            return len(events[-1].get("delivery_statuses", [])) >= 2

        await eventually(failed_twice)
        # Until the first event goes through, the one behind it waits.
        assert {e["type"] for e in receiver.events()} == {"device-provisioned"}
        receiver.status = 200
        await eventually(lambda: receiver.events()[-1]["type"] == "device-decommissioned")
        await drained()

        decommissioned, provisioned = await list_events(client)
        latest, *earlier = provisioned["delivery_statuses"]
        assert latest == {"integration_id": integration_id, "success": True, "status_code": 200}
        failure = {
            "integration_id": integration_id,
            "success": False,
            "status_code": 503,
            "error": "client: unexpected status code from API: 503",
        }
        assert earlier
        assert all(s == failure for s in earlier)
        assert decommissioned["delivery_statuses"] == [latest]
        # Every attempt posted the same event, body and signature alike.
        bodies = {d.body for d in receiver.deliveries if d.event["type"] == "device-provisioned"}
        assert len(bodies) == 1

    async def test_receiver_down_then_up(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        integration_id = await create_integration(client, webhook(receiver.url))
        await receiver.server.stop()
        await _decommission(client, "dev-1")

        async def tried() -> bool:
            events = await list_events(client)
            return bool(events and events[0].get("delivery_statuses"))

        await eventually(tried)
        [event] = await list_events(client)
        failure = event["delivery_statuses"][-1]
        assert failure["integration_id"] == integration_id
        assert failure["success"] is False
        assert "status_code" not in failure
        assert failure["error"].startswith("ConnectError")

        await receiver.server.start()
        await eventually(lambda: len(receiver.deliveries) == 1)
        await drained()
        [event] = await list_events(client)
        assert event["delivery_statuses"][0]["success"] is True
        assert receiver.events()[0]["id"] == event["id"]

    async def test_a_refusing_receiver_is_not_retried(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        await create_integration(client, webhook(receiver.url))
        receiver.status = 400
        await _decommission(client, "dev-1")
        await _decommission(client, "dev-2")
        await eventually(lambda: len(receiver.deliveries) == 2)
        # Not set aside as dead either: the event's log is the record of the refusal.
        await drained()
        for event in await list_events(client):
            [status] = event["delivery_statuses"]
            assert status["status_code"] == 400
            assert status["success"] is False

    async def test_no_integration_no_event(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        await _provision(client, "dev-1")
        await _set_status(client, "rejected", "dev-1")
        await _decommission(client, "dev-1")
        assert await list_events(client) == []
        assert await mongo[db_name]["outbox"].count_documents({}) == 0

    async def test_a_repeated_request_is_recorded_once(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        await create_integration(client, webhook(receiver.url))
        await _provision(client, "dev-1", **{"Idempotency-Key": "effect-1"})
        await _provision(client, "dev-1", **{"Idempotency-Key": "effect-1"})
        await _provision(client, "dev-1", **{"Idempotency-Key": "effect-2"})
        await eventually(lambda: len(receiver.deliveries) == 2)
        await drained()
        assert len(await list_events(client)) == 2
        assert len({e["id"] for e in receiver.events()}) == 2

    @pytest.mark.parametrize(
        ("method", "path", "kind"),
        [
            ("PUT", "bulk/devices/status/accepted", "device-status-changed"),
            ("POST", "devices", "device-provisioned"),
        ],
    )
    async def test_a_merged_redelivery_repeats_nothing_and_loses_nothing(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
        method: str,
        path: str,
        kind: str,
    ) -> None:
        # The outbox merges status changes and provisionings of several devices, one key per
        # item: an effect delivered before may come again merged with effects never seen.
        await create_integration(client, webhook(receiver.url))
        url = f"{INTERNAL}/tenants//{path}"
        first = await client.request(
            method, url, json=[{"id": "d1"}, {"id": "d2"}], headers={"Idempotency-Key": "k1,k2"}
        )
        again = await client.request(
            method, url, json=[{"id": "d2"}, {"id": "d3"}], headers={"Idempotency-Key": "k2,k3"}
        )
        assert (first.status_code, again.status_code) == (202, 202)
        await eventually(lambda: len(receiver.deliveries) == 3)
        await drained()
        events = await list_events(client)
        assert sorted((e["type"], e["data"]["id"]) for e in events) == [
            (kind, "d1"),
            (kind, "d2"),
            (kind, "d3"),
        ]
        assert len({e["id"] for e in receiver.events()}) == 3

    async def test_new_credentials_reach_waiting_events(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        integration_id = await create_integration(client, webhook(receiver.url + "/missing"))
        await _decommission(client, "dev-1")

        async def tried() -> bool:
            return bool((await list_events(client))[0].get("delivery_statuses"))

        await eventually(tried)  # the receiver answers 404: retried
        r = await client.put(
            f"{MGMT}/integrations/{integration_id}/credentials",
            json={"type": "http", "http": {"url": receiver.url, "secret": "abcd"}},
            headers=USER,
        )
        assert r.status_code == 204
        await eventually(lambda: len(receiver.deliveries) == 1)
        [delivery] = receiver.deliveries
        assert delivery.headers["x-men-signature"] == mender_signature("abcd", delivery.body)
        await drained()

    async def test_removing_the_integration_drops_its_deliveries(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        integration_id = await create_integration(client, webhook(receiver.url))
        receiver.status = 503
        await _decommission(client, "dev-1")
        await eventually(lambda: len(receiver.deliveries) >= 1)
        r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
        assert r.status_code == 204
        await drained()
        attempts = len(receiver.deliveries)
        receiver.status = 200
        await _decommission(client, "dev-2")  # no integration: nothing to deliver
        assert len(receiver.deliveries) == attempts


class TestAddressGuard:
    async def test_a_target_that_became_reserved_is_refused(
        self,
        make_settings: Callable[..., Settings],
        asgi_client: ClientFactory,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        # Created where loopback was allowed; delivered by an app that forbids it. The first
        # app stops before the second starts, so its relay cannot take the delivery.
        async with asgi_client(create_app(make_settings(), environ={})) as lenient:
            integration_id = await create_integration(lenient, webhook(receiver.url))
        strict = create_app(make_settings(domain_skipverify=False), environ={})
        async with asgi_client(strict) as strict_client:
            await _decommission(strict_client, "dev-1")
            await drained()
            [event] = await list_events(strict_client)
        assert receiver.deliveries == []
        [status] = event["delivery_statuses"]
        assert status["integration_id"] == integration_id
        assert status["success"] is False
        assert "resolves to a reserved address (127.0.0.1)" in status["error"]


class TestProvisionDevice:
    async def test_legacy_device_id(self, client: httpx.AsyncClient, receiver: Receiver) -> None:
        await create_integration(client, webhook(receiver.url))
        r = await client.post(DEVICES, json={"device_id": "dev-9"})
        assert r.status_code == 202
        await eventually(lambda: len(receiver.deliveries) == 1)
        assert receiver.events()[0]["data"] == {"id": "dev-9"}

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"status": "accepted"}, "missing device ID"),
            ([{"id": "d1"}, {"status": "accepted"}], "missing device ID"),
            (
                [{"id": f"d{n}"} for n in range(101)],
                "too many bulk items: max 100 items per request",
            ),
            (
                "d1",
                "invalid request: NewDeviceIn: Input should be a valid dictionary or object to "
                "extract fields from; list[NewDeviceIn]: Input should be a valid list",
            ),
        ],
    )
    async def test_bad_body(self, client: httpx.AsyncClient, body: Any, message: str) -> None:
        await create_integration(client, webhook("http://127.0.0.1:9/x"))
        r = await client.post(DEVICES, json=body)
        assert r.status_code == 400
        assert r.json()["error"] == message
        assert await list_events(client) == []


class TestBulkSetDeviceStatus:
    async def test_bad_status(self, client: httpx.AsyncClient) -> None:
        await create_integration(client, webhook("http://127.0.0.1:9/x"))
        r = await client.put(f"{INTERNAL}/tenants//bulk/devices/status/lost", json=[{"id": "d"}])
        assert r.status_code == 400
        assert r.json()["error"] == "invalid status 'lost'"
        assert await list_events(client) == []

    async def test_too_many(self, client: httpx.AsyncClient) -> None:
        await create_integration(client, webhook("http://127.0.0.1:9/x"))
        body = [{"id": f"d{n}"} for n in range(101)]
        r = await client.put(f"{INTERNAL}/tenants//bulk/devices/status/accepted", json=body)
        assert r.status_code == 400
        assert r.json()["error"] == "too many bulk items: max 100 items per request"
        assert await list_events(client) == []

    async def test_item_without_id(self, client: httpx.AsyncClient) -> None:
        r = await client.put(f"{INTERNAL}/tenants//bulk/devices/status/accepted", json=[{}])
        assert r.status_code == 400
        assert r.json()["error"] == "invalid request: 0.id: Field required"

    async def test_tenant_in_path(self, client: httpx.AsyncClient, receiver: Receiver) -> None:
        other = user_headers("tenant-b")
        r = await client.post(f"{MGMT}/integrations", json=webhook(receiver.url), headers=other)
        assert r.status_code == 201
        r = await client.put(
            f"{INTERNAL}/tenants/tenant-b/bulk/devices/status/rejected", json=[{"id": "d1"}]
        )
        assert r.status_code == 202
        await eventually(lambda: len(receiver.deliveries) == 1)
        assert await list_events(client) == []
        [event] = (await client.get(f"{MGMT}/events", headers=other)).json()
        assert event["data"] == {"id": "d1", "status": "rejected"}


class TestGetEvents:
    async def test_paging_and_filter(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        drained: Drained,
    ) -> None:
        integration_id = await create_integration(client, webhook(receiver.url))
        for n in range(5):
            await _decommission(client, f"dev-{n}")
        await drained()
        page = await list_events(client, page=2, per_page=2)
        assert [e["data"]["id"] for e in page] == ["dev-2", "dev-1"]
        mine = await list_events(client, integration_id=integration_id)
        assert len(mine) == 5
        assert await list_events(client, integration_id=str(uuid.uuid4())) == []

    async def test_bad_integration_id(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/events", params={"integration_id": "x"}, headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == "integration ID is not a valid UUID"

    async def test_bad_page(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/events", params={"page": "0"}, headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == "invalid page query: must be at least 1"

    async def test_needs_a_user(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/events")
        assert r.status_code == 401
        assert set(r.json()) == {"error", "request_id"}

    async def test_events_expire(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        await create_integration(client, webhook("http://127.0.0.1:9/x"))
        await _decommission(client, "dev-1")
        [doc] = await mongo[db_name]["events"].find({}).to_list()
        lifetime = doc["expire_ts"] - doc["event_ts"]
        assert lifetime.total_seconds() == Settings(dev_mode=True).event_exp_timeout
        indexes = await mongo[db_name]["events"].index_information()
        assert indexes["events_ttl"]["expireAfterSeconds"] == 0


class TestDeleteTenant:
    async def test_removes_everything(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        other = user_headers("tenant-b")
        r = await client.post(
            f"{MGMT}/integrations", json=webhook("http://127.0.0.1:9/x"), headers=other
        )
        assert r.status_code == 201
        await create_integration(client, webhook("http://127.0.0.1:9/y"))
        await client.delete(f"{INTERNAL}/tenants/tenant-b/devices/d1")
        r = await client.delete(f"{INTERNAL}/tenants/tenant-b")
        assert r.status_code == 204
        assert (await client.get(f"{MGMT}/integrations", headers=other)).json() == []
        assert (await client.get(f"{MGMT}/events", headers=other)).json() == []
        for name in ("integrations", "events", "devices"):
            assert await mongo[db_name][name].count_documents({"tenant_id": "tenant-b"}) == 0
        assert len((await client.get(f"{MGMT}/integrations", headers=USER)).json()) == 1

    async def test_empty_tenant(self, client: httpx.AsyncClient) -> None:
        await create_integration(client, webhook("http://127.0.0.1:9/y"))
        r = await client.delete(f"{INTERNAL}/tenants/")
        assert r.status_code == 400
        assert r.json()["error"] == "tenant id is empty"
        assert len((await client.get(f"{MGMT}/integrations", headers=USER)).json()) == 1
