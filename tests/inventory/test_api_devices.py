"""Devices API: a device reporting its own inventory (PUT replaces, PATCH merges)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from common.core.mongo import Document
from tests.inventory.conftest import (
    DEVICES_API,
    INTERNAL_V1,
    USER,
    attrs_by_key,
    device_headers,
    get_device,
    put_inventory,
    set_status,
)
from tests.toolkit import assert_error

DEV = device_headers("dev-1")


class TestReplaceAttributes:
    async def test_creates_the_device(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        body = [
            {"name": "device_type", "value": "raspberrypi4"},
            {"name": "cpus", "value": 4},
            {"name": "macs", "value": ["02:00:00:00:00:01", "02:00:00:00:00:02"]},
            {"name": "ip_addr", "value": "10.0.0.7", "description": "IP address"},
        ]
        r = await client.put(DEVICES_API, json=body, headers=DEV)
        assert r.status_code == 200
        assert r.content == b""

        stored = await devices.find_one({"_id": "dev-1"})
        assert stored is not None
        assert stored["tenant_id"] == ""
        assert stored["revision"] == 0
        assert stored["attributes"]["inventory-device_type"] == {
            "name": "device_type",
            "value": "raspberrypi4",
            "scope": "inventory",
        }
        assert stored["attributes"]["inventory-cpus"]["value"] == 4.0
        assert isinstance(stored["attributes"]["inventory-cpus"]["value"], float)
        assert stored["attributes"]["system-created_ts"]["value"] == stored["created_ts"]
        assert stored["attributes"]["system-updated_ts"]["value"] == stored["updated_ts"]
        assert set(stored["text"]) == {
            "dev", "1", "raspberrypi4", "10", "0", "7",
        }  # fmt: skip

        device = await get_device(client, "dev-1")
        attrs = attrs_by_key(device)
        assert attrs["inventory/cpus"] == {"name": "cpus", "scope": "inventory", "value": 4.0}
        assert attrs["inventory/ip_addr"]["description"] == "IP address"
        assert attrs["inventory/macs"]["value"] == ["02:00:00:00:00:01", "02:00:00:00:00:02"]
        assert "timestamp" not in attrs["inventory/cpus"]
        assert device["updated_ts"] == attrs["system/updated_ts"]["value"]
        assert "system/created_ts" in attrs

    async def test_replaces_only_the_inventory_scope(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(
            client, "dev-1", [{"name": "a", "value": "x"}, {"name": "b", "value": "y"}]
        )
        await set_status(client, "accepted", ["dev-1"])
        first = await devices.find_one({"_id": "dev-1"})
        assert first is not None

        await put_inventory(client, "dev-1", [{"name": "b", "value": "z"}])

        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert "inventory/a" not in attrs
        assert attrs["inventory/b"]["value"] == "z"
        assert attrs["identity/status"]["value"] == "accepted"
        stored = await devices.find_one({"_id": "dev-1"})
        assert stored is not None
        assert stored["created_ts"] == first["created_ts"]
        assert stored["updated_ts"] >= first["updated_ts"]
        assert "x" not in stored["text"]
        assert {"z", "accepted"} <= set(stored["text"])

    async def test_escapes_dots_and_dollars_in_names(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "dev-1", [{"name": "os.release$id", "value": "$HOME"}])

        stored = await devices.find_one({"_id": "dev-1"})
        assert stored is not None
        assert stored["attributes"]["inventory-os\uff0erelease\uff04id"]["name"] == "os.release$id"
        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert attrs["inventory/os.release$id"]["value"] == "$HOME"

    async def test_chunked_body(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'[{"name": "device_type", '
            yield b'"value": "qemux86-64"}]'

        r = await client.put(
            DEVICES_API,
            content=chunks(),
            headers={**DEV, "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert attrs["inventory/device_type"]["value"] == "qemux86-64"

    async def test_device_cannot_write_another_scope(self, client: httpx.AsyncClient) -> None:
        await put_inventory(
            client, "dev-1", [{"name": "status", "value": "accepted", "scope": "identity"}]
        )

        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert "identity/status" not in attrs
        assert attrs["inventory/status"]["value"] == "accepted"

    async def test_repeated_name_keeps_the_last_value(self, client: httpx.AsyncClient) -> None:
        await put_inventory(
            client, "dev-1", [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]
        )

        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert attrs["inventory/a"]["value"] == "2"

    async def test_over_the_limit(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        body = [{"name": f"a{i}", "value": "v"} for i in range(11)]  # the test limit is 10
        r = await client.put(DEVICES_API, json=body, headers=DEV)
        assert_error(r, 400, "above the limit")
        assert await devices.count_documents({}) == 0

    async def test_at_the_limit(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "dev-1", [{"name": f"a{i}", "value": "v"} for i in range(10)])
        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert sum(1 for key in attrs if key.startswith("inventory/")) == 10

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ([{"name": "a", "value": True}], "supported types"),
            ([{"name": "a", "value": None}], "supported types"),
            ([{"name": "a", "value": {"$gt": 1}}], "supported types"),
            ([{"name": "a", "value": ["x", 1]}], "consistent type"),
            ([{"name": "a", "value": [["x"]]}], "consistent type"),
            ([{"name": "a", "value": "x" * 4097}], "4096"),
            ([{"name": "a", "value": ["x"] * 257}], "256"),
            ([{"name": "a"}], "value"),
            ([{"value": "x"}], "name"),
            ([{"name": "", "value": "x"}], "between 1 and 1024"),
            ([{"name": "n" * 1025, "value": "x"}], "between 1 and 1024"),
            ([{"name": "a\u0000b", "value": "x"}], "NUL"),
            ([{"name": 5, "value": "x"}], "name"),
            ([{"name": "a", "value": "x", "description": "d" * 1025}], "1024"),
            ({"name": "a", "value": "x"}, "list"),
            ("text", "list"),
        ],
    )
    async def test_bad_attributes(
        self,
        client: httpx.AsyncClient,
        devices: AsyncCollection[Document],
        body: Any,
        fragment: str,
    ) -> None:
        r = await client.put(DEVICES_API, json=body, headers=DEV)
        assert_error(r, 400, fragment)
        assert await devices.count_documents({}) == 0

    async def test_not_finite_number(self, client: httpx.AsyncClient) -> None:
        r = await client.put(
            DEVICES_API,
            content=b'[{"name": "load", "value": NaN}]',
            headers={**DEV, "Content-Type": "application/json"},
        )
        assert_error(r, 400, "finite")

    async def test_malformed_json(self, client: httpx.AsyncClient) -> None:
        r = await client.put(
            DEVICES_API, content=b'[{"name": ', headers={**DEV, "Content-Type": "application/json"}
        )
        assert_error(r, 400, "decode")

    async def test_user_token_is_refused(self, client: httpx.AsyncClient) -> None:
        r = await client.put(DEVICES_API, json=[], headers=USER)
        assert_error(r, 401)

    async def test_no_token(self, client: httpx.AsyncClient) -> None:
        r = await client.put(DEVICES_API, json=[])
        assert_error(r, 401)

    async def test_tenant_comes_from_the_token(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(client, "dev-t", [{"name": "a", "value": "x"}], tenant="tenant-a")

        stored = await devices.find_one({"_id": "dev-t"})
        assert stored is not None
        assert stored["tenant_id"] == "tenant-a"
        r = await client.get("/api/management/v1/inventory/devices/dev-t", headers=USER)
        assert_error(r, 404, "Device not found")


class TestUpdateAttributes:
    async def test_merges_into_the_inventory(
        self, client: httpx.AsyncClient, devices: AsyncCollection[Document]
    ) -> None:
        await put_inventory(
            client, "dev-1", [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]
        )
        before = await devices.find_one({"_id": "dev-1"})
        assert before is not None

        r = await client.patch(
            DEVICES_API, json=[{"name": "b", "value": "3"}, {"name": "c", "value": 4}], headers=DEV
        )
        assert r.status_code == 200

        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert attrs["inventory/a"]["value"] == "1"
        assert attrs["inventory/b"]["value"] == "3"
        assert attrs["inventory/c"]["value"] == 4.0
        after = await devices.find_one({"_id": "dev-1"})
        assert after is not None
        assert after["updated_ts"] >= before["updated_ts"]
        assert "2" not in after["text"]
        assert "3" in after["text"]

    async def test_creates_the_device(self, client: httpx.AsyncClient) -> None:
        r = await client.patch(DEVICES_API, json=[{"name": "a", "value": "1"}], headers=DEV)
        assert r.status_code == 200
        assert attrs_by_key(await get_device(client, "dev-1"))["inventory/a"]["value"] == "1"

    async def test_limit_counts_the_stored_attributes(self, client: httpx.AsyncClient) -> None:
        await put_inventory(client, "dev-1", [{"name": f"a{i}", "value": "v"} for i in range(8)])

        new = [
            {"name": "b1", "value": "v"},
            {"name": "b2", "value": "v"},
            {"name": "b3", "value": "v"},
        ]
        r = await client.patch(DEVICES_API, json=new, headers=DEV)
        assert_error(r, 400, "above the limit")
        attrs = attrs_by_key(await get_device(client, "dev-1"))
        assert "inventory/b1" not in attrs

        # Overwriting stored attributes does not add to the count.
        r = await client.patch(
            DEVICES_API,
            json=[
                {"name": "a0", "value": "w"},
                {"name": "b1", "value": "v"},
                {"name": "b2", "value": "v"},
            ],
            headers=DEV,
        )
        assert r.status_code == 200, r.text

    async def test_other_scopes_do_not_count(self, client: httpx.AsyncClient) -> None:
        body = [{"name": f"id{i}", "value": "v"} for i in range(9)]
        r = await client.patch(
            f"{INTERNAL_V1}/tenants//device/dev-1/attribute/scope/identity", json=body
        )
        assert r.status_code == 200
        r = await client.patch(
            DEVICES_API, json=[{"name": f"a{i}", "value": "v"} for i in range(10)], headers=DEV
        )
        assert r.status_code == 200, r.text
        stored = attrs_by_key(await get_device(client, "dev-1"))
        assert {key for key in stored if key.startswith("inventory/")} == {
            f"inventory/a{i}" for i in range(10)
        }
        assert {f"identity/id{i}" for i in range(9)} <= set(stored)
