"""Devices API: the device reads its desired configuration and reports what it applied."""

from __future__ import annotations

from datetime import datetime

import httpx
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.deviceconfig.conftest import (
    DEVICE_API,
    INTERNAL,
    MANAGEMENT,
    device_headers,
    user_headers,
)
from tests.toolkit import assert_error

DEVICE = "5c1e2f0a-7d3b-4e8a-9b6c-1f2e3d4c5b6a"


async def _provision(client: httpx.AsyncClient, device_id: str = DEVICE, tenant: str = "") -> None:
    response = await client.post(
        f"{INTERNAL}/tenants/{tenant}/devices", json={"device_id": device_id}
    )
    assert response.status_code == 201, response.text


async def _management_view(
    client: httpx.AsyncClient, device_id: str = DEVICE, tenant: str = ""
) -> dict[str, object]:
    response = await client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers(tenant))
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


class TestGetConfiguration:
    async def test_desired_configuration(self, client: httpx.AsyncClient) -> None:
        await _provision(client)
        desired = {"key": "value", "another-key": "another-value", "dollar-key": "$"}
        put = await client.put(f"{MANAGEMENT}/{DEVICE}", json=desired, headers=user_headers())
        assert put.status_code == 204
        response = await client.get(DEVICE_API, headers=device_headers(DEVICE))
        assert response.status_code == 200
        assert response.json() == desired

    async def test_empty_after_provisioning(self, client: httpx.AsyncClient) -> None:
        await _provision(client)
        response = await client.get(DEVICE_API, headers=device_headers(DEVICE))
        assert response.status_code == 200
        assert response.json() == {}

    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        response = await client.get(DEVICE_API, headers=device_headers(DEVICE))
        assert_error(response, 404, "device does not exist")

    async def test_tenant_scoped(self, client: httpx.AsyncClient) -> None:
        await _provision(client, tenant="tenant-a")
        put = await client.put(
            f"{MANAGEMENT}/{DEVICE}", json={"a": "b"}, headers=user_headers("tenant-a")
        )
        assert put.status_code == 204
        other = await client.get(DEVICE_API, headers=device_headers(DEVICE, "tenant-b"))
        assert_error(other, 404, "device does not exist")
        own = await client.get(DEVICE_API, headers=device_headers(DEVICE, "tenant-a"))
        assert own.json() == {"a": "b"}

    async def test_needs_a_device_token(self, client: httpx.AsyncClient) -> None:
        await _provision(client)
        assert_error(
            await client.get(DEVICE_API, headers=user_headers()),
            401,
            "the token does not belong to a device",
        )
        assert_error(await client.get(DEVICE_API), 401, "Authorization not present in header")


class TestReportConfiguration:
    async def test_each_report_replaces_the_last(self, client: httpx.AsyncClient) -> None:
        await _provision(client)
        desired = {"timezone": "UTC"}
        await client.put(f"{MANAGEMENT}/{DEVICE}", json=desired, headers=user_headers())
        first = {"key": "value", "another-key": "another-value", "dollar-key": "$"}
        response = await client.put(DEVICE_API, json=first, headers=device_headers(DEVICE))
        assert response.status_code == 204
        assert response.content == b""
        view = await _management_view(client)
        assert view["reported"] == first
        assert view["configured"] == desired
        first_ts = datetime.fromisoformat(str(view["reported_ts"]))

        second = {"key": "update-value", "additional-key": ""}
        assert (
            await client.put(DEVICE_API, json=second, headers=device_headers(DEVICE))
        ).status_code == 204
        view = await _management_view(client)
        assert view["reported"] == second
        assert datetime.fromisoformat(str(view["reported_ts"])) >= first_ts

        assert (
            await client.put(DEVICE_API, json={}, headers=device_headers(DEVICE))
        ).status_code == 204
        view = await _management_view(client)
        assert view["reported"] == {}
        assert view["configured"] == desired

    async def test_report_of_a_device_not_provisioned_yet(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        response = await client.put(
            DEVICE_API, json={"a": "1"}, headers=device_headers(DEVICE, "t1")
        )
        assert response.status_code == 204
        view = await _management_view(client, tenant="t1")
        assert view["reported"] == {"a": "1"}
        assert view["configured"] == {}
        assert "updated_ts" in view
        stored = await mongo[db_name]["devices"].find_one({"_id": DEVICE})
        assert stored is not None
        assert stored["tenant_id"] == "t1"
        assert stored["reported"] == [{"key": "a", "value": "1"}]

    async def test_keys_mongo_could_not_take_as_field_names(
        self, client: httpx.AsyncClient
    ) -> None:
        awkward = {"a.b": "1", "$set": "2", "ключ": "значение"}
        response = await client.put(DEVICE_API, json=awkward, headers=device_headers(DEVICE))
        assert response.status_code == 204
        view = await _management_view(client)
        assert view["reported"] == awkward

    async def test_needs_a_device_token(self, client: httpx.AsyncClient) -> None:
        response = await client.put(DEVICE_API, json={"a": "b"}, headers=user_headers())
        assert_error(response, 401, "the token does not belong to a device")
        missing = await client.get(f"{MANAGEMENT}/{DEVICE}", headers=user_headers())
        assert_error(missing, 404, "device does not exist")
