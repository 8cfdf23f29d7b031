"""Management API v1: device lists and filters, one device, tags with ETags, groups."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from common.core.mongo import Document
from tests.inventory.conftest import (
    INTERNAL_V1,
    MGMT_V1,
    MGMT_V2,
    USER,
    attrs_by_key,
    get_device,
    put_inventory,
    set_status,
    user_headers,
)
from tests.toolkit import assert_error

DEVICES = f"{MGMT_V1}/devices"


async def _seed(client: httpx.AsyncClient) -> None:
    """Four devices: d1..d4 with types, a numeric `n` (d3 reports it as a string) and groups."""
    await put_inventory(
        client, "d1", [{"name": "device_type", "value": "rpi4"}, {"name": "n", "value": 5}]
    )
    await put_inventory(
        client, "d2", [{"name": "device_type", "value": "rpi4"}, {"name": "n", "value": 7}]
    )
    await put_inventory(
        client, "d3", [{"name": "device_type", "value": "bbb"}, {"name": "n", "value": "5"}]
    )
    await put_inventory(client, "d4", [{"name": "device_type", "value": "bbb"}])
    await set_status(client, "accepted", ["d1", "d2", "d3"])
    await set_status(client, "pending", ["d4"])
    for device, group in (("d1", "prod"), ("d3", "test")):
        r = await client.put(f"{DEVICES}/{device}/group", json={"group": group}, headers=USER)
        assert r.status_code == 204


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()]


async def _search_text(client: httpx.AsyncClient, text: str) -> list[str]:
    r = await client.post(f"{MGMT_V2}/filters/search", json={"text": text}, headers=USER)
    return _ids(r)


class TestGetDevices:
    async def test_lists_with_paging_headers(self, client: httpx.AsyncClient) -> None:
        await _seed(client)

        r = await client.get(DEVICES, params={"per_page": 3}, headers=USER)
        assert _ids(r) == ["d1", "d2", "d3"]
        assert r.headers["X-Total-Count"] == "4"
        assert 'rel="next"' in r.headers["Link"]
        assert "page=2" in r.headers["Link"]
        attrs = attrs_by_key(r.json()[0])
        assert attrs["inventory/device_type"]["value"] == "rpi4"
        assert attrs["system/group"]["value"] == "prod"

        r = await client.get(DEVICES, params={"per_page": 3, "page": 2}, headers=USER)
        assert _ids(r) == ["d4"]
        assert 'rel="prev"' in r.headers["Link"]
        assert 'rel="next"' not in r.headers["Link"]

    async def test_filter_defaults_to_inventory_scope(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        r = await client.get(DEVICES, params={"device_type": "rpi4"}, headers=USER)
        assert _ids(r) == ["d1", "d2"]
        assert r.headers["X-Total-Count"] == "2"

    async def test_filter_with_scope_and_eq(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        r = await client.get(DEVICES, params={"identity/status": "eq:accepted"}, headers=USER)
        assert _ids(r) == ["d1", "d2", "d3"]
        r = await client.get(
            DEVICES,
            params={"identity/status": "accepted", "inventory/device_type": "bbb"},
            headers=USER,
        )
        assert _ids(r) == ["d3"]

    async def test_number_matches_numbers_and_strings(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        r = await client.get(DEVICES, params={"n": "5"}, headers=USER)
        assert _ids(r) == ["d1", "d3"]
        r = await client.get(DEVICES, params={"n": "5.0"}, headers=USER)
        assert _ids(r) == ["d1"]

    async def test_value_with_colons(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [{"name": "mac", "value": "02:00:00:00:00:01"}])
        r = await client.get(DEVICES, params={"mac": "02:00:00:00:00:01"}, headers=USER)
        assert _ids(r) == ["d1"]

    async def test_timestamp_matches_stored_times(self, client: httpx.AsyncClient) -> None:
        r = await client.patch(
            f"{INTERNAL_V1}/tenants//device/d1/attribute/scope/system",
            json=[{"name": "check_in_time", "value": "2024-05-01T10:00:00Z"}],
        )
        assert r.status_code == 200
        r = await client.get(
            DEVICES, params={"system/check_in_time": "2024-05-01T10:00:00Z"}, headers=USER
        )
        assert _ids(r) == ["d1"]

    async def test_unknown_scope_matches_nothing(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        r = await client.get(DEVICES, params={"nosuch/device_type": "rpi4"}, headers=USER)
        assert _ids(r) == []
        assert r.headers["X-Total-Count"] == "0"

    async def test_sort(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        r = await client.get(DEVICES, params={"sort": "device_type:asc"}, headers=USER)
        # Ties keep the id order.
        assert _ids(r) == ["d3", "d4", "d1", "d2"]
        r = await client.get(DEVICES, params={"sort": "identity/status"}, headers=USER)
        assert _ids(r) == ["d4", "d1", "d2", "d3"]
        statuses = [attrs_by_key(d)["identity/status"]["value"] for d in r.json()]
        assert statuses == ["pending", "accepted", "accepted", "accepted"]  # default: descending

    async def test_has_group_and_group(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        assert _ids(await client.get(DEVICES, params={"has_group": "true"}, headers=USER)) == [
            "d1",
            "d3",
        ]
        assert _ids(await client.get(DEVICES, params={"has_group": "0"}, headers=USER)) == [
            "d2",
            "d4",
        ]
        assert _ids(await client.get(DEVICES, params={"group": "test"}, headers=USER)) == ["d3"]

    @pytest.mark.parametrize(
        ("params", "fragment"),
        [
            ({"page": "0"}, "page"),
            ({"page": "x"}, "page"),
            ({"per_page": "501"}, "per_page"),
            ({"per_page": "-1"}, "per_page"),
            ({"has_group": "maybe"}, "has_group"),
            ({"sort": "name:up"}, "sort order"),
            ({"sort": "nosuch/name"}, "scope"),
        ],
    )
    async def test_bad_parameters(
        self, client: httpx.AsyncClient, params: dict[str, str], fragment: str
    ) -> None:
        assert_error(await client.get(DEVICES, params=params, headers=USER), 400, fragment)

    async def test_other_tenants_are_invisible(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "a1", [{"name": "x", "value": "1"}], tenant="ta")
        await put_inventory(client, "b1", [{"name": "x", "value": "1"}], tenant="tb")
        assert _ids(await client.get(DEVICES, headers=user_headers("ta"))) == ["a1"]
        assert _ids(await client.get(DEVICES, params={"x": "1"}, headers=user_headers("tb"))) == [
            "b1"
        ]

    async def test_requires_a_user(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(DEVICES), 401)


class TestGetDevice:
    async def test_found(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [{"name": "a", "value": "x"}])
        r = await client.get(f"{DEVICES}/d1", headers=USER)
        assert r.status_code == 200
        assert "ETag" not in r.headers  # no tags yet
        body = r.json()
        assert body["id"] == "d1"
        assert set(body) == {"id", "attributes", "updated_ts"}
        assert attrs_by_key(body)["inventory/a"] == {
            "name": "a",
            "scope": "inventory",
            "value": "x",
        }

    async def test_not_found(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(f"{DEVICES}/nope", headers=USER), 404, "Device not found")

    async def test_device_created_by_a_peer_has_no_updated_ts(
        self, client: httpx.AsyncClient
    ) -> None:
        r = await client.post(
            f"{INTERNAL_V1}/tenants//devices",
            json={"id": "d1", "attributes": [{"name": "mac", "value": "m", "scope": "identity"}]},
        )
        assert r.status_code == 201
        body = await get_device(client, "d1")
        assert "updated_ts" not in body


class TestDeleteDeviceInventory:
    async def test_clears_only_the_inventory_scope(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "d1", [{"name": "a", "value": "x"}])
        await set_status(client, "accepted", ["d1"])

        r = await client.delete(f"{DEVICES}/d1", headers=USER)
        assert r.status_code == 204
        attrs = attrs_by_key(await get_device(client, "d1"))
        assert "inventory/a" not in attrs
        assert attrs["identity/status"]["value"] == "accepted"
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        assert "x" not in stored["text"]

    async def test_unknown_device(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        assert (await client.delete(f"{DEVICES}/nope", headers=USER)).status_code == 204
        assert await devices.count_documents({}) == 0


class TestTags:
    async def test_add_and_etag(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "d1", [{"name": "a", "value": "x"}])
        r = await client.patch(
            f"{DEVICES}/d1/tags",
            json=[{"name": "location", "value": "Berlin", "description": "where"}],
            headers=USER,
        )
        assert r.status_code == 200
        assert r.content == b""

        r = await client.get(f"{DEVICES}/d1", headers=USER)
        etag = r.headers["ETag"]
        tag = attrs_by_key(r.json())["tags/location"]
        assert tag["value"] == "Berlin"
        assert tag["description"] == "where"
        assert tag["timestamp"].endswith("Z")
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        assert stored["tags_etag"] == etag
        assert "berlin" in stored["text"]
        assert await _search_text(client, "BERLIN") == ["d1"]

        r = await client.patch(
            f"{DEVICES}/d1/tags",
            json=[{"name": "env", "value": "test"}],
            headers={**USER, "If-Match": etag},
        )
        assert r.status_code == 200
        r = await client.get(f"{DEVICES}/d1", headers=USER)
        assert r.headers["ETag"] != etag
        assert {"tags/location", "tags/env"} <= set(attrs_by_key(r.json()))

    async def test_stale_etag(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        await client.patch(f"{DEVICES}/d1/tags", json=[{"name": "t", "value": "1"}], headers=USER)

        r = await client.put(
            f"{DEVICES}/d1/tags",
            json=[{"name": "t", "value": "2"}],
            headers={**USER, "If-Match": "stale"},
        )
        assert_error(r, 412, "ETag does not match")
        assert attrs_by_key(await get_device(client, "d1"))["tags/t"]["value"] == "1"

    async def test_etag_before_any_tag(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        r = await client.patch(
            f"{DEVICES}/d1/tags",
            json=[{"name": "t", "value": "1"}],
            headers={**USER, "If-Match": "x"},
        )
        assert_error(r, 412)

    async def test_replace(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        await client.patch(
            f"{DEVICES}/d1/tags",
            json=[{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
            headers=USER,
        )
        etag = (await client.get(f"{DEVICES}/d1", headers=USER)).headers["ETag"]

        r = await client.put(
            f"{DEVICES}/d1/tags",
            json=[{"name": "c", "value": "3"}],
            headers={**USER, "If-Match": f'"{etag}"'},
        )
        assert r.status_code == 200, r.text
        tags = {k for k in attrs_by_key(await get_device(client, "d1")) if k.startswith("tags/")}
        assert tags == {"tags/c"}

    async def test_over_the_limit(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        await client.patch(
            f"{DEVICES}/d1/tags",
            json=[{"name": f"t{i}", "value": "v"} for i in range(2)],
            headers=USER,
        )
        r = await client.patch(
            f"{DEVICES}/d1/tags",
            json=[{"name": "x", "value": "v"}, {"name": "y", "value": "v"}],
            headers=USER,
        )
        assert_error(r, 400, "above the limit")  # the test limit is 3
        r = await client.put(
            f"{DEVICES}/d1/tags",
            json=[{"name": f"z{i}", "value": "v"} for i in range(4)],
            headers=USER,
        )
        assert_error(r, 400, "above the limit")

    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        r = await client.put(
            f"{DEVICES}/nope/tags", json=[{"name": "t", "value": "1"}], headers=USER
        )
        assert_error(r, 404, "Device not found")

    async def test_bad_body(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        r = await client.put(f"{DEVICES}/d1/tags", json=[{"name": "t"}], headers=USER)
        assert_error(r, 400, "value")


class TestDeviceGroup:
    async def test_assign_and_get(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "d1", [])
        r = await client.get(f"{DEVICES}/d1/group", headers=USER)
        assert r.json() == {"group": None}

        r = await client.put(f"{DEVICES}/d1/group", json={"group": "Field_Units-2"}, headers=USER)
        assert r.status_code == 204
        assert (await client.get(f"{DEVICES}/d1/group", headers=USER)).json() == {
            "group": "Field_Units-2"
        }
        stored = await devices.find_one({"_id": "d1"})
        assert stored is not None
        assert stored["attributes"]["system-group"]["value"] == "Field_Units-2"
        assert {"field", "units", "2"} <= set(stored["text"])

        # A device has one group: assigning another moves it.
        await client.put(f"{DEVICES}/d1/group", json={"group": "other"}, headers=USER)
        assert (await client.get(f"{DEVICES}/d1/group", headers=USER)).json() == {"group": "other"}
        assert await _search_text(client, "field") == []

    @pytest.mark.parametrize("group", ["", "a b", "x" * 257, "ü", "a/b"])
    async def test_bad_group_name(self, client: httpx.AsyncClient, group: str) -> None:
        await put_inventory(client, "d1", [])
        r = await client.put(f"{DEVICES}/d1/group", json={"group": group}, headers=USER)
        assert_error(r, 400, "group name")

    async def test_bad_body(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        assert_error(await client.put(f"{DEVICES}/d1/group", json={"group": 1}, headers=USER), 400)
        assert_error(await client.put(f"{DEVICES}/d1/group", json={}, headers=USER), 400)

    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(f"{DEVICES}/nope/group", headers=USER), 404)
        r = await client.put(f"{DEVICES}/nope/group", json={"group": "g"}, headers=USER)
        assert_error(r, 404, "Device not found")

    async def test_clear(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        await client.put(f"{DEVICES}/d1/group", json={"group": "g1"}, headers=USER)

        assert_error(await client.delete(f"{DEVICES}/d1/group/other", headers=USER), 404)
        assert_error(await client.delete(f"{DEVICES}/nope/group/g1", headers=USER), 404)
        r = await client.delete(f"{DEVICES}/d1/group/g1", headers=USER)
        assert r.status_code == 204
        assert (await client.get(f"{DEVICES}/d1/group", headers=USER)).json() == {"group": None}
        assert await _search_text(client, "g1") == []


class TestListGroups:
    async def test_lists_groups_in_use(self, client: httpx.AsyncClient) -> None:
        assert (await client.get(f"{MGMT_V1}/groups", headers=USER)).json() == []
        await _seed(client)
        r = await client.get(f"{MGMT_V1}/groups", headers=USER)
        assert r.json() == ["prod", "test"]

    async def test_by_status(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        await client.put(f"{DEVICES}/d4/group", json={"group": "waiting"}, headers=USER)
        r = await client.get(f"{MGMT_V1}/groups", params={"status": "pending"}, headers=USER)
        assert r.json() == ["waiting"]


class TestGroupDevices:
    async def test_list(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        await client.put(f"{DEVICES}/d2/group", json={"group": "prod"}, headers=USER)
        r = await client.get(f"{MGMT_V1}/groups/prod/devices", params={"per_page": 1}, headers=USER)
        assert r.json() == ["d1"]
        assert r.headers["X-Total-Count"] == "2"
        assert 'rel="next"' in r.headers["Link"]

    async def test_unknown_group(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT_V1}/groups/nope/devices", headers=USER)
        assert_error(r, 404, "group not found")

    async def test_add(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        r = await client.patch(
            f"{MGMT_V1}/groups/prod/devices", json=["d1", "d2", "missing"], headers=USER
        )
        assert r.status_code == 200
        assert r.json() == {
            "matched_count": 2,
            "created_count": 0,
            "updated_count": 1,
            "deleted_count": 0,
        }
        r = await client.get(f"{MGMT_V1}/groups/prod/devices", headers=USER)
        assert r.json() == ["d1", "d2"]
        assert await _search_text(client, "prod") == ["d1", "d2"]

    @pytest.mark.parametrize(
        ("group", "body", "fragment"),
        [
            ("prod", [], "no device IDs"),
            ("prod", {"ids": ["d1"]}, "list"),
            ("prod", [1, 2], "string"),
            ("bad name", ["d1"], "group name"),
        ],
    )
    async def test_add_bad_request(
        self, client: httpx.AsyncClient, group: str, body: Any, fragment: str
    ) -> None:
        r = await client.patch(f"{MGMT_V1}/groups/{group}/devices", json=body, headers=USER)
        assert_error(r, 400, fragment)

    async def test_remove(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        r = await client.request(
            "DELETE", f"{MGMT_V1}/groups/prod/devices", json=["d1", "d2"], headers=USER
        )
        assert r.status_code == 200
        assert r.json()["updated_count"] == 1
        assert r.json()["matched_count"] == 1
        assert (await client.get(f"{DEVICES}/d1/group", headers=USER)).json() == {"group": None}
        assert (await client.get(f"{DEVICES}/d3/group", headers=USER)).json() == {"group": "test"}

    async def test_remove_empty_list(self, client: httpx.AsyncClient) -> None:
        r = await client.request("DELETE", f"{MGMT_V1}/groups/prod/devices", json=[], headers=USER)
        assert_error(r, 400, "no device IDs")

    async def test_delete_group(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        await client.put(f"{DEVICES}/d2/group", json={"group": "test"}, headers=USER)
        r = await client.delete(f"{MGMT_V1}/groups/test", headers=USER)
        assert r.status_code == 200
        assert r.json()["updated_count"] == 2
        assert (await client.get(f"{MGMT_V1}/groups", headers=USER)).json() == ["prod"]
        r = await client.delete(f"{MGMT_V1}/groups/test", headers=USER)
        assert r.json()["updated_count"] == 0
        assert_error(await client.delete(f"{MGMT_V1}/groups/a%20b", headers=USER), 400)


class TestOtherTenants:
    """A user can never reach another tenant's devices, even knowing their ids."""

    async def test_cannot_touch_foreign_devices(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "victim", [{"name": "a", "value": "x"}], tenant="ta")
        before = await devices.find_one({"_id": "victim"})
        evil = user_headers("tb")

        r = await client.patch(
            f"{DEVICES}/victim/tags", json=[{"name": "t", "value": "1"}], headers=evil
        )
        assert_error(r, 404)
        r = await client.put(f"{DEVICES}/victim/group", json={"group": "g"}, headers=evil)
        assert_error(r, 404)
        r = await client.patch(f"{MGMT_V1}/groups/g/devices", json=["victim"], headers=evil)
        assert r.json()["matched_count"] == 0
        assert (await client.delete(f"{DEVICES}/victim", headers=evil)).status_code == 204
        assert_error(await client.get(f"{DEVICES}/victim/group", headers=evil), 404)

        assert await devices.find_one({"_id": "victim"}) == before


class TestLimits:
    async def test_oversized_body(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "d1", [])
        big = [{"name": f"t{i}", "value": "v" * 4000} for i in range(300)]  # > 1 MiB
        r = await client.put(f"{DEVICES}/d1/tags", json=big, headers=USER)
        assert_error(r, 413)
