"""Internal APIs: what deviceauth, deployments and devicemonitor call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from common.core.mongo import Document
from tests.inventory.conftest import (
    INTERNAL_V1,
    INTERNAL_V2,
    MGMT_V1,
    USER,
    attrs_by_key,
    get_device,
    put_inventory,
    set_status,
)
from tests.toolkit import assert_error


def _status_url(status: str, tenant: str = "") -> str:
    return f"{INTERNAL_V1}/tenants/{tenant}/devices/status/{status}"


def _scope_url(device: str, scope: str, tenant: str = "") -> str:
    return f"{INTERNAL_V1}/tenants/{tenant}/device/{device}/attribute/scope/{scope}"


class TestHealth:
    async def test_health_and_alive(self, client: httpx.AsyncClient) -> None:
        for probe in ("health", "alive"):
            r = await client.get(f"{INTERNAL_V1}/{probe}")
            assert r.status_code == 204
            assert r.content == b""


class TestCreateTenant:
    async def test_create_twice(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        for _ in range(2):
            r = await client.post(f"{INTERNAL_V1}/tenants", json={"tenant_id": "acme"})
            assert r.status_code == 201
        tenants = devices.database["tenants"]
        assert await tenants.count_documents({"_id": "acme", "tenant_id": "acme"}) == 1

    @pytest.mark.parametrize("body", [{"tenant_id": ""}, {}, {"tenant_id": 5}])
    async def test_bad_request(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        assert_error(await client.post(f"{INTERNAL_V1}/tenants", json=body), 400)


class TestInitializeDevice:
    async def test_create_and_merge(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        body = {
            "id": "d1",
            "updated_ts": "2016-10-03T16:58:51.639Z",
            "attributes": [
                {"name": "mac", "value": "02:00:00:00:00:01", "scope": "identity"},
                {"name": "ip_addr", "value": "1.2.3.4", "description": "IP address"},
            ],
        }
        r = await client.post(f"{INTERNAL_V1}/tenants/acme/devices", json=body)
        assert r.status_code == 201
        assert r.headers["Location"] == "devices/d1"
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        assert stored["tenant_id"] == "acme"
        assert stored["attributes"]["identity-mac"]["value"] == "02:00:00:00:00:01"
        assert stored["attributes"]["inventory-ip_addr"]["description"] == "IP address"

        again = {"id": "d1", "attributes": [{"name": "ip_addr", "value": "5.6.7.8"}]}
        r = await client.post(f"{INTERNAL_V1}/tenants/acme/devices", json=again)
        assert r.status_code == 201
        attrs = attrs_by_key(await get_device(client, "d1", tenant="acme"))
        assert attrs["inventory/ip_addr"]["value"] == "5.6.7.8"
        assert attrs["identity/mac"]["value"] == "02:00:00:00:00:01"

    async def test_empty_tenant_segment(self, client: httpx.AsyncClient) -> None:
        r = await client.post(f"{INTERNAL_V1}/tenants//devices", json={"id": "d1"})
        assert r.status_code == 201
        assert (await get_device(client, "d1"))["id"] == "d1"

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"id": ""},
            {"id": 7},
            {"id": "d1", "attributes": [{"name": "a", "value": "x", "scope": "bogus"}]},
            {"id": "d1", "attributes": [{"name": "a", "value": True}]},
            {"id": "d1", "attributes": "a"},
        ],
    )
    async def test_bad_request(
        self,
        client: httpx.AsyncClient,
        devices: AsyncCollection[Document],
        body: dict[str, Any],
    ) -> None:
        assert_error(await client.post(f"{INTERNAL_V1}/tenants//devices", json=body), 400)
        assert await devices.count_documents({}) == 0


class TestDeleteDevice:
    async def test_delete(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "d1", [], tenant="acme")
        await put_inventory(client, "d1-other", [])
        r = await client.delete(f"{INTERNAL_V1}/tenants/acme/devices/d1")
        assert r.status_code == 204
        assert await devices.count_documents({"_id": "d1"}) == 0
        assert await devices.count_documents({"_id": "d1-other"}) == 1

        assert_error(await client.delete(f"{INTERNAL_V1}/tenants/acme/devices/d1"), 404)

    async def test_other_tenant(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "d1", [], tenant="acme")
        assert_error(await client.delete(f"{INTERNAL_V1}/tenants/evil/devices/d1"), 404)
        assert await devices.count_documents({"_id": "d1"}) == 1


class TestUpdateStatuses:
    async def test_sets_status_and_creates_devices(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "d1", [])
        r = await client.post(
            _status_url("accepted"), json=[{"id": "d1", "revision": 1}, {"id": "d2", "revision": 3}]
        )
        assert r.status_code == 200
        assert r.json() == {
            "matched_count": 1,
            "created_count": 1,
            "updated_count": 1,
            "deleted_count": 0,
        }
        for device, revision in (("d1", 1), ("d2", 3)):
            stored = await devices.find_one({"_id": device})
            assert stored is not None
            assert stored["revision"] == revision
            assert stored["attributes"]["identity-status"] == {
                "name": "status",
                "value": "accepted",
                "scope": "identity",
            }
            assert "accepted" in stored["text"]

    async def test_older_revision_is_ignored(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await set_status(client, "accepted", ["d1"], revision=5)
        for revision in (4, 5):
            r = await client.post(
                _status_url("rejected"), json=[{"id": "d1", "revision": revision}]
            )
            assert r.status_code == 200
            assert r.json()["matched_count"] == 0
        attrs = attrs_by_key(await get_device(client, "d1"))
        assert attrs["identity/status"]["value"] == "accepted"

        await set_status(client, "rejected", ["d1"], revision=6)
        attrs = attrs_by_key(await get_device(client, "d1"))
        assert attrs["identity/status"]["value"] == "rejected"
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        assert stored["revision"] == 6
        assert "accepted" not in stored["text"]

    async def test_redelivery_is_harmless(self, client: httpx.AsyncClient) -> None:
        for _ in range(2):
            await set_status(client, "pending", ["d1"], revision=2)
        attrs = attrs_by_key(await get_device(client, "d1"))
        assert attrs["identity/status"]["value"] == "pending"

    async def test_a_check_in_comes_with_the_status(self, client: httpx.AsyncClient) -> None:
        item = {"id": "d1", "revision": 1, "check_in_time": "2025-06-01T14:00:00.5+02:00"}
        r = await client.post(_status_url("accepted"), json=[item])
        assert r.status_code == 200
        attrs = attrs_by_key(await get_device(client, "d1"))
        assert attrs["identity/status"]["value"] == "accepted"
        checked_in = datetime.fromisoformat(attrs["system/check_in_time"]["value"])
        assert checked_in == datetime(2025, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)

    async def test_decommissioned_deletes(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await set_status(client, "accepted", ["d1", "d2", "d3"])
        r = await client.post(
            _status_url("decommissioned"),
            json=[{"id": "d1", "revision": 2}, {"id": "d2", "revision": 2}],
        )
        assert r.status_code == 200
        assert r.json()["deleted_count"] == 2
        assert [d["_id"] async for d in devices.find({})] == ["d3"]

    async def test_per_tenant(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await set_status(client, "accepted", ["d1"], tenant="acme")
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        assert stored["tenant_id"] == "acme"

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            ("bogus", [{"id": "d1", "revision": 1}]),
            ("accepted", [{"id": "d1", "revision": "1"}]),
            ("accepted", [{"id": "d1", "revision": -1}]),
            ("accepted", [{"id": "d1"}]),
            ("accepted", [{"id": "", "revision": 1}]),
            ("accepted", {"id": "d1", "revision": 1}),
            ("accepted", [{"id": "d1", "revision": 1, "check_in_time": "2025-06-01T12:00:00"}]),
            ("accepted", [{"id": "d1", "revision": 1, "check_in_time": "today"}]),
            ("accepted", [{"id": "d1", "revision": 1, "check_in_time": 1}]),
        ],
    )
    async def test_bad_request(
        self,
        client: httpx.AsyncClient,
        devices: AsyncCollection[Document],
        status: str,
        body: Any,
    ) -> None:
        assert_error(await client.post(_status_url(status), json=body), 400)
        assert await devices.count_documents({}) == 0


class TestUpdateScopeAttributes:
    async def test_creates_device_in_scope(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        body = [
            {"name": "mac", "value": "02:00:00:00:00:01"},
            {"name": "serial", "value": "SN-1", "scope": "inventory"},  # the path's scope wins
        ]
        r = await client.patch(_scope_url("d1", "identity"), json=body)
        assert r.status_code == 200
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        assert set(stored["attributes"]) == {"identity-mac", "identity-serial", "system-created_ts"}
        assert stored["revision"] == 0
        assert "updated_ts" not in stored
        assert {"02", "sn", "1", "d1"} <= set(stored["text"])

    async def test_check_in_time_is_a_time(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        body = [{"name": "check_in_time", "value": "2024-05-01T12:30:00.250+02:00"}]
        assert (await client.patch(_scope_url("d1", "system"), json=body)).status_code == 200
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        when = stored["attributes"]["system-check_in_time"]["value"]
        assert when == datetime(2024, 5, 1, 10, 30, 0, 250000, tzinfo=UTC)
        attrs = attrs_by_key(await get_device(client, "d1"))
        assert attrs["system/check_in_time"]["value"] == "2024-05-01T10:30:00.250000Z"

    @pytest.mark.parametrize("value", ["yesterday", "2024-05-01", 1714560000])
    async def test_bad_check_in_time(self, client: httpx.AsyncClient, value: Any) -> None:
        body = [{"name": "check_in_time", "value": value}]
        assert_error(
            await client.patch(_scope_url("d1", "system"), json=body), 400, "check_in_time"
        )

    async def test_unknown_scope(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        r = await client.patch(_scope_url("d1", "bogus"), json=[{"name": "a", "value": "x"}])
        assert_error(r, 400, "bogus")
        assert await devices.count_documents({}) == 0

    async def test_if_unmodified_since(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])  # sets system/updated_ts
        body = [{"name": "mac", "value": "m"}]
        past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
        future = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)

        r = await client.patch(
            _scope_url("d1", "identity"), json=body, headers={"If-Unmodified-Since": past}
        )
        assert_error(r, 412, "modified")
        assert "identity/mac" not in attrs_by_key(await get_device(client, "d1"))

        r = await client.patch(
            _scope_url("d1", "identity"), json=body, headers={"If-Unmodified-Since": future}
        )
        assert r.status_code == 200
        # A device never updated by itself has no update time: the condition holds.
        r = await client.patch(
            _scope_url("d2", "identity"), json=body, headers={"If-Unmodified-Since": past}
        )
        assert r.status_code == 200

        r = await client.patch(
            _scope_url("d1", "identity"), json=body, headers={"If-Unmodified-Since": "soon"}
        )
        assert_error(r, 400, "If-Unmodified-Since")

    async def test_limit(self, client: httpx.AsyncClient) -> None:
        body = [{"name": f"a{i}", "value": "x"} for i in range(11)]
        assert_error(await client.patch(_scope_url("d1", "identity"), json=body), 400, "limit")
        assert_error(await client.get(f"{MGMT_V1}/devices/d1", headers=USER), 404)


class TestUpdateAttributes:
    async def test_each_attribute_in_its_scope(self, client: httpx.AsyncClient) -> None:
        body = [
            {"name": "mac", "value": "m", "scope": "identity"},
            {"name": "tier", "value": "micro", "scope": "system"},
            {"name": "os", "value": "linux"},
        ]
        r = await client.patch(f"{INTERNAL_V1}/tenants//device/d1/attributes", json=body)
        assert r.status_code == 200
        attrs = attrs_by_key(await get_device(client, "d1"))
        assert {"identity/mac", "system/tier", "inventory/os"} <= set(attrs)

    async def test_unknown_scope(self, client: httpx.AsyncClient) -> None:
        body = [{"name": "mac", "value": "m", "scope": "secret"}]
        r = await client.patch(f"{INTERNAL_V1}/tenants//device/d1/attributes", json=body)
        assert_error(r, 400, "secret")


class TestGetDeviceGroups:
    async def test_groups(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [], tenant="acme")
        url = f"{INTERNAL_V1}/tenants/acme/devices/d1/groups"
        assert (await client.get(url)).json() == {"groups": []}
        r = await client.patch(
            f"{INTERNAL_V1}/tenants/acme/device/d1/attribute/scope/system",
            json=[{"name": "group", "value": "prod"}],
        )
        assert r.status_code == 200
        assert (await client.get(url)).json() == {"groups": ["prod"]}

    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [], tenant="acme")
        assert_error(await client.get(f"{INTERNAL_V1}/tenants//devices/d1/groups"), 404)


class TestReindex:
    async def test_only_for_devicemonitor(self, client: httpx.AsyncClient) -> None:
        url = f"{INTERNAL_V1}/tenants//devices/d1/reindex"
        assert_error(await client.post(url), 400, "unsupported service")
        assert_error(await client.post(url, params={"service": "other"}), 400)

    async def test_devicemonitor_not_deployed(self, client: httpx.AsyncClient) -> None:
        url = f"{INTERNAL_V1}/tenants//devices/d1/reindex"
        r = await client.post(url, params={"service": "devicemonitor"})
        assert_error(r, 503, "devicemonitor")


class TestInternalSearch:
    async def test_search_in_tenant(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "a1", [{"name": "device_type", "value": "rpi4"}], tenant="acme")
        await put_inventory(client, "a2", [{"name": "device_type", "value": "bbb"}], tenant="acme")
        await put_inventory(client, "o1", [{"name": "device_type", "value": "rpi4"}])
        r = await client.patch(f"{MGMT_V1}/groups/g/devices", json=["o1"], headers=USER)
        assert r.status_code == 200

        body = {
            "per_page": 500,
            "filters": [
                {"scope": "inventory", "attribute": "device_type", "type": "$eq", "value": "rpi4"}
            ],
        }
        r = await client.post(f"{INTERNAL_V2}/tenants/acme/filters/search", json=body)
        assert r.status_code == 200
        assert [d["id"] for d in r.json()] == ["a1"]
        assert r.headers["X-Total-Count"] == "1"

        # How deployments resolves a group in the single-tenant install.
        group = {
            "filters": [{"scope": "system", "attribute": "group", "type": "$eq", "value": "g"}]
        }
        r = await client.post(f"{INTERNAL_V2}/tenants//filters/search", json=group)
        assert [d["id"] for d in r.json()] == ["o1"]

    async def test_bad_request(self, client: httpx.AsyncClient) -> None:
        body = {"filters": [{"scope": "inventory", "attribute": "a", "type": "$bad", "value": 1}]}
        r = await client.post(f"{INTERNAL_V2}/tenants//filters/search", json=body)
        assert_error(r, 400, "$bad")


class TestInternalStatistics:
    async def test_per_tenant(self, client: httpx.AsyncClient) -> None:
        await set_status(client, "accepted", ["a1", "a2"], tenant="acme")
        await set_status(client, "pending", ["o1"])
        r = await client.get(f"{INTERNAL_V2}/tenants/acme/statistics")
        assert r.json()["devices_by_status"]["accepted"]["standard"] == 2
        assert r.json()["devices_by_status"]["pending"]["standard"] == 0
        r = await client.get(f"{INTERNAL_V2}/tenants//statistics")
        assert r.json()["devices_by_status"]["pending"]["standard"] == 1
