"""Internal API: deviceauth's provisioning and decommissioning, tenants, merges, deploys."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.deviceconfig.conftest import (
    DEVICE_API,
    INTERNAL,
    MANAGEMENT,
    Deployments,
    device_headers,
    user_headers,
)
from tests.toolkit import assert_error
from tests.toolkit.commands import recording


async def _provision(client: httpx.AsyncClient, tenant: str, device_id: str | None = None) -> str:
    device_id = device_id or str(uuid.uuid4())
    response = await client.post(
        f"{INTERNAL}/tenants/{tenant}/devices", json={"device_id": device_id}
    )
    assert response.status_code == 201, response.text
    assert response.content == b""
    return device_id


async def _configured(client: httpx.AsyncClient, device_id: str, tenant: str = "") -> Any:
    response = await client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers(tenant))
    assert response.status_code == 200, response.text
    return response.json()["configured"]


class TestHealth:
    async def test_health_and_alive(self, client: httpx.AsyncClient) -> None:
        for path in ("/health", "/alive"):
            response = await client.get(INTERNAL + path)
            assert response.status_code == 204
            assert response.content == b""


class TestProvisionTenant:
    async def test_created(self, client: httpx.AsyncClient) -> None:
        response = await client.post(f"{INTERNAL}/tenants", json={"tenant_id": "acme"})
        assert response.status_code == 201
        assert response.content == b""

    async def test_blank_tenant(self, client: httpx.AsyncClient) -> None:
        for body in ({"tenant_id": ""}, {}):
            response = await client.post(f"{INTERNAL}/tenants", json=body)
            assert_error(response, 400, "invalid request body: tenant_id: cannot be blank.")
        response = await client.post(f"{INTERNAL}/tenants", json={"tenant_id": 7})
        assert_error(response, 400, "invalid request: tenant_id: Input should be a valid string")


class TestDeleteTenant:
    async def test_only_that_tenants_devices_go(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        doomed = [await _provision(client, "doomed") for _ in range(3)]
        kept = await _provision(client, "kept")
        default = await _provision(client, "")
        response = await client.delete(f"{INTERNAL}/tenants/doomed")
        assert response.status_code == 204
        for device_id in doomed:
            gone = await client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers("doomed"))
            assert_error(gone, 404, "device does not exist")
        assert await _configured(client, kept, "kept") == {}
        assert await _configured(client, default) == {}
        assert await mongo[db_name]["devices"].count_documents({"tenant_id": "doomed"}) == 0
        # Nothing left to delete is no error.
        assert (await client.delete(f"{INTERNAL}/tenants/doomed")).status_code == 204

    async def test_the_default_tenant_is_never_deleted(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = await _provision(client, "")
        response = await client.delete(f"{INTERNAL}/tenants/")
        assert response.status_code == 307
        followed = await client.delete(response.headers["Location"])
        assert_error(followed, 405, "method not allowed")
        assert await _configured(client, device_id) == {}
        assert await mongo[db_name]["devices"].count_documents({}) == 1


class TestProvisionDevice:
    async def test_created_with_an_empty_configuration(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = await _provision(client, "")
        stored = await mongo[db_name]["devices"].find_one({"_id": device_id})
        assert stored is not None
        assert stored["tenant_id"] == ""
        assert stored["configured"] == stored["reported"] == []
        assert stored["updated_ts"] is not None
        device = await client.get(DEVICE_API, headers=device_headers(device_id))
        assert device.json() == {}

    async def test_twice_is_a_conflict_that_changes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        device_id = await _provision(client, "acme")
        put = await client.put(
            f"{MANAGEMENT}/{device_id}", json={"a": "b"}, headers=user_headers("acme")
        )
        assert put.status_code == 204
        again = await client.post(f"{INTERNAL}/tenants/acme/devices", json={"device_id": device_id})
        assert_error(again, 409, "device already exists")
        assert await _configured(client, device_id, "acme") == {"a": "b"}

    async def test_a_list_leaves_those_recorded_as_they_are(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        known = await _provision(client, "acme")
        await client.put(f"{MANAGEMENT}/{known}", json={"a": "b"}, headers=user_headers("acme"))
        new = [str(uuid.uuid4()) for _ in range(2)]
        with recording(db_name) as recorded:
            response = await client.post(
                f"{INTERNAL}/tenants/acme/devices",
                json=[{"device_id": d} for d in [known, *new, new[0]]],
            )
        assert response.status_code == 201
        assert recorded.names == ["insert"]
        assert await _configured(client, known, "acme") == {"a": "b"}
        for device_id in new:
            assert await _configured(client, device_id, "acme") == {}
        assert await mongo[db_name]["devices"].count_documents({"tenant_id": "acme"}) == 3

    async def test_a_list_of_more_than_100_is_refused(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        body = [{"device_id": str(n)} for n in range(101)]
        response = await client.post(f"{INTERNAL}/tenants//devices", json=body)
        assert_error(response, 400, "too many bulk items: max 100 items per request")
        assert await mongo[db_name]["devices"].count_documents({}) == 0

    async def test_blank_device_id(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        for body in ({"device_id": ""}, {}, [{"device_id": "d1"}, {"device_id": ""}]):
            response = await client.post(f"{INTERNAL}/tenants//devices", json=body)
            assert_error(response, 400, "invalid request body: device_id: cannot be blank.")
        assert await mongo[db_name]["devices"].count_documents({}) == 0


class TestDecommissionDevice:
    async def test_configuration_is_gone(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = await _provision(client, "")
        await client.put(f"{MANAGEMENT}/{device_id}", json={"a": "b"}, headers=user_headers())
        await client.put(DEVICE_API, json={"a": "b"}, headers=device_headers(device_id))
        other = await _provision(client, "")
        response = await client.delete(f"{INTERNAL}/tenants//devices/{device_id}")
        assert response.status_code == 204
        assert response.content == b""
        assert await mongo[db_name]["devices"].count_documents({"_id": device_id}) == 0
        assert_error(
            await client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers()),
            404,
            "device does not exist",
        )
        assert_error(
            await client.get(DEVICE_API, headers=device_headers(device_id)),
            404,
            "device does not exist",
        )
        assert await _configured(client, other) == {}

    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        response = await client.delete(f"{INTERNAL}/tenants//devices/{uuid.uuid4()}")
        assert_error(response, 404, "device does not exist")

    async def test_other_tenant_untouched(self, client: httpx.AsyncClient) -> None:
        device_id = await _provision(client, "acme")
        response = await client.delete(f"{INTERNAL}/tenants/other/devices/{device_id}")
        assert_error(response, 404, "device does not exist")
        assert await _configured(client, device_id, "acme") == {}


class TestUpdateConfiguration:
    def _url(self, device_id: str, tenant: str = "") -> str:
        return f"{INTERNAL}/tenants/{tenant}/configurations/device/{device_id}"

    async def test_merges_into_the_desired_configuration(self, client: httpx.AsyncClient) -> None:
        device_id = await _provision(client, "acme")
        await client.put(
            f"{MANAGEMENT}/{device_id}",
            json={"keep": "1", "change": "old"},
            headers=user_headers("acme"),
        )
        response = await client.patch(
            self._url(device_id, "acme"), json={"change": "new", "add": "x"}
        )
        assert response.status_code == 204
        assert response.content == b""
        assert await _configured(client, device_id, "acme") == {
            "keep": "1",
            "change": "new",
            "add": "x",
        }

    async def test_creates_the_device(self, client: httpx.AsyncClient) -> None:
        device_id = str(uuid.uuid4())
        response = await client.patch(self._url(device_id), json={"azure": "HostName=x"})
        assert response.status_code == 204
        assert await _configured(client, device_id) == {"azure": "HostName=x"}

    async def test_merged_configuration_keeps_the_limit(self, client: httpx.AsyncClient) -> None:
        device_id = await _provision(client, "")
        first = {f"key-{i}": "1" for i in range(60)}
        assert (await client.patch(self._url(device_id), json=first)).status_code == 204
        second = {f"other-{i}": "2" for i in range(41)}
        response = await client.patch(self._url(device_id), json=second)
        assert_error(
            response,
            400,
            "invalid request body: too many configuration attributes, maximum is 100",
        )
        assert await _configured(client, device_id) == first
        overwrite = {f"key-{i}": "3" for i in range(40)}
        assert (await client.patch(self._url(device_id), json=overwrite)).status_code == 204
        assert await _configured(client, device_id) == {**first, **overwrite}

    async def test_concurrent_merges_lose_nothing(self, client: httpx.AsyncClient) -> None:
        device_id = await _provision(client, "")
        responses = await asyncio.gather(
            *(client.patch(self._url(device_id), json={f"key-{i}": str(i)}) for i in range(12))
        )
        assert [r.status_code for r in responses] == [204] * 12
        assert await _configured(client, device_id) == {f"key-{i}": str(i) for i in range(12)}


class TestDeployConfiguration:
    async def test_deploys_in_the_path_tenant(
        self, client: httpx.AsyncClient, deployments: Deployments
    ) -> None:
        tenant = f"tenant-{uuid.uuid4().hex[:8]}"
        device_id = await _provision(client, tenant)
        await client.patch(
            f"{INTERNAL}/tenants/{tenant}/configurations/device/{device_id}", json={"a": "b"}
        )
        response = await client.post(
            f"{INTERNAL}/tenants/{tenant}/configurations/device/{device_id}/deploy",
            json={"retries": 1},
        )
        assert response.status_code == 200, response.text
        deployment_id = response.json()["deployment_id"]
        deployment = await deployments.deployment(deployment_id, tenant)
        assert deployment["type"] == "configuration"
        assert deployment["configuration"] == '{"a":"b"}'
        assert deployment["retries"] == 1
        view = await client.get(f"{MANAGEMENT}/{device_id}", headers=user_headers(tenant))
        assert view.json()["deployment_id"] == deployment_id

    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            f"{INTERNAL}/tenants//configurations/device/{uuid.uuid4()}/deploy", json={}
        )
        assert_error(response, 404, "device does not exist")
