"""Management API v2 (search, filterable attributes, statistics) and v2alpha1 identity search."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.core.pages import MAX_PAGE, MAX_PER_PAGE
from tests.inventory.conftest import (
    INTERNAL_V1,
    MGMT_V1,
    MGMT_V2,
    USER,
    attrs_by_key,
    make_settings,
    put_inventory,
    serve,
    set_status,
    user_headers,
)
from tests.toolkit import assert_error

SEARCH = f"{MGMT_V2}/filters/search"


async def _seed(client: httpx.AsyncClient) -> None:
    """d1..d4: types, numbers n=1..4 (d4 none), hostnames, tags on d1, groups, statuses."""
    rows = [
        ("d1", "rpi4", 1, "Kitchen-Sensor", "02:00:00:00:00:01"),
        ("d2", "rpi4", 2, "garage-sensor", "02:00:00:00:00:02"),
        ("d3", "bbb", 3, "Garage-Door", "0a:00:00:00:00:03"),
    ]
    for device, device_type, n, host, mac in rows:
        await put_inventory(
            client,
            device,
            [
                {"name": "device_type", "value": device_type},
                {"name": "n", "value": n},
                {"name": "hostname", "value": host},
            ],
        )
        r = await client.patch(
            f"{INTERNAL_V1}/tenants//device/{device}/attribute/scope/identity",
            json=[{"name": "mac", "value": mac}],
        )
        assert r.status_code == 200
    await put_inventory(client, "d4", [{"name": "device_type", "value": "qemu"}])
    await set_status(client, "accepted", ["d1", "d2", "d3"])
    await set_status(client, "pending", ["d4"])
    r = await client.patch(
        f"{MGMT_V1}/devices/d1/tags", json=[{"name": "room", "value": "Kitchen"}], headers=USER
    )
    assert r.status_code == 200
    r = await client.patch(f"{MGMT_V1}/groups/field/devices", json=["d2", "d3"], headers=USER)
    assert r.status_code == 200


@pytest.fixture(scope="module")
async def seeded(mongo_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One seeded app shared by the read-only tests of this module."""
    async with serve(make_settings(mongo_url)) as client:
        await _seed(client)
        yield client


async def _search(
    client: httpx.AsyncClient, body: Any, headers: dict[str, str] = USER
) -> list[str]:
    r = await client.post(SEARCH, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()]


def _filter(scope: str, attribute: str, op: str, value: Any) -> dict[str, Any]:
    return {"filters": [{"scope": scope, "attribute": attribute, "type": op, "value": value}]}


class TestSearchOperators:
    @pytest.mark.parametrize(
        ("scope", "attribute", "op", "value", "expected"),
        [
            ("inventory", "device_type", "$eq", "rpi4", ["d1", "d2"]),
            ("inventory", "device_type", "$ne", "rpi4", ["d3", "d4"]),
            ("inventory", "n", "$eq", 2, ["d2"]),
            ("inventory", "n", "$gt", 2, ["d3"]),
            ("inventory", "n", "$gte", 2, ["d2", "d3"]),
            ("inventory", "n", "$lt", 2.5, ["d1", "d2"]),
            ("inventory", "n", "$lte", 1, ["d1"]),
            ("inventory", "n", "$ltne", 2, ["d1", "d4"]),
            ("inventory", "n", "$ltne", 0, ["d4"]),
            ("inventory", "hostname", "$ltne", "H", ["d3", "d4"]),
            ("inventory", "device_type", "$in", ["bbb", "qemu"], ["d3", "d4"]),
            ("inventory", "device_type", "$nin", ["bbb", "qemu"], ["d1", "d2"]),
            ("inventory", "n", "$exists", True, ["d1", "d2", "d3"]),
            ("inventory", "n", "$exists", False, ["d4"]),
            ("inventory", "hostname", "$regex", "garage", ["d2"]),
            ("inventory", "hostname", "$regex", "/garage/i", ["d2", "d3"]),
            ("inventory", "hostname", "$regex", "sensor", []),
            ("inventory", "hostname", "$regex", ".*sensor$", ["d2"]),
            ("identity", "mac", "$regex", "02:", ["d1", "d2"]),
            ("identity", "status", "$eq", "accepted", ["d1", "d2", "d3"]),
            ("identity", "id", "$eq", "d3", ["d3"]),
            ("identity", "id", "$in", ["d1", "d4", "zz"], ["d1", "d4"]),
            ("system", "group", "$eq", "field", ["d2", "d3"]),
            ("system", "group", "$nin", [""], ["d1", "d2", "d3", "d4"]),
            ("tags", "room", "$eq", "Kitchen", ["d1"]),
        ],
    )
    async def test_operator(
        self,
        seeded: httpx.AsyncClient,
        scope: str,
        attribute: str,
        op: str,
        value: Any,
        expected: list[str],
    ) -> None:
        assert await _search(seeded, _filter(scope, attribute, op, value)) == expected

    async def test_filters_combine_with_and(self, seeded: httpx.AsyncClient) -> None:
        body = {
            "filters": [
                {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"},
                {"scope": "inventory", "attribute": "device_type", "type": "$eq", "value": "rpi4"},
                {"scope": "inventory", "attribute": "n", "type": "$gt", "value": 1},
            ]
        }
        assert await _search(seeded, body) == ["d2"]

    async def test_web_ui_device_list(self, seeded: httpx.AsyncClient) -> None:
        body = {
            "page": 1,
            "per_page": 20,
            "filters": [
                {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"}
            ],
            "sort": [{"scope": "system", "attribute": "updated_ts", "order": "desc"}],
            "attributes": [
                {"scope": "identity", "attribute": "status"},
                {"scope": "inventory", "attribute": "device_type"},
                {"scope": "system", "attribute": "group"},
            ],
        }
        r = await seeded.post(SEARCH, json=body, headers=USER)
        assert r.status_code == 200
        assert r.headers["X-Total-Count"] == "3"
        assert {d["id"] for d in r.json()} == {"d1", "d2", "d3"}


class TestSearch:
    async def test_empty_body_lists_everything(self, seeded: httpx.AsyncClient) -> None:
        r = await seeded.post(SEARCH, headers=USER)
        assert r.status_code == 200
        assert [d["id"] for d in r.json()] == ["d1", "d2", "d3", "d4"]
        assert r.headers["X-Total-Count"] == "4"
        assert await _search(seeded, {}) == ["d1", "d2", "d3", "d4"]

    async def test_paging(self, seeded: httpx.AsyncClient) -> None:
        r = await seeded.post(SEARCH, json={"page": 2, "per_page": 3}, headers=USER)
        assert [d["id"] for d in r.json()] == ["d4"]
        assert r.headers["X-Total-Count"] == "4"
        assert 'rel="prev"' in r.headers["Link"]

    async def test_page_beyond_what_the_database_can_skip(self, seeded: httpx.AsyncClient) -> None:
        r = await seeded.post(SEARCH, json={"page": 2**64 + 1}, headers=USER)
        assert_error(r, 400, f"invalid page: must be at most {MAX_PAGE}")
        r = await seeded.post(
            SEARCH, json={"page": MAX_PAGE, "per_page": MAX_PER_PAGE}, headers=USER
        )
        assert r.status_code == 200
        assert r.json() == []
        assert r.headers["X-Total-Count"] == "4"

    async def test_sort(self, seeded: httpx.AsyncClient) -> None:
        by_n = {"sort": [{"scope": "inventory", "attribute": "n", "order": "desc"}]}
        assert await _search(seeded, by_n) == ["d3", "d2", "d1", "d4"]
        two_keys = {
            "sort": [
                {"scope": "inventory", "attribute": "device_type", "order": "asc"},
                {"scope": "inventory", "attribute": "n", "order": "desc"},
            ]
        }
        assert await _search(seeded, two_keys) == ["d3", "d4", "d2", "d1"]
        by_id = {"sort": [{"scope": "identity", "attribute": "id", "order": "desc"}]}
        assert await _search(seeded, by_id) == ["d4", "d3", "d2", "d1"]

    async def test_projection(self, seeded: httpx.AsyncClient) -> None:
        body = {
            "device_ids": ["d1"],
            "attributes": [
                {"scope": "inventory", "attribute": "device_type"},
                {"scope": "tags", "attribute": "room"},
            ],
        }
        r = await seeded.post(SEARCH, json=body, headers=USER)
        device = r.json()[0]
        assert set(attrs_by_key(device)) == {
            "inventory/device_type",
            "tags/room",
            "system/updated_ts",
        }
        assert device["updated_ts"] == attrs_by_key(device)["system/updated_ts"]["value"]

    async def test_device_ids(self, seeded: httpx.AsyncClient) -> None:
        assert await _search(seeded, {"device_ids": ["d4", "d2", "nope"]}) == ["d2", "d4"]
        assert await _search(seeded, {"device_ids": []}) == []

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("garage", ["d2", "d3"]),
            ("GARAGE sensor", ["d2"]),
            ("kitchen", ["d1"]),  # an inventory value and a tag
            ("0a:00", ["d3"]),  # identity values, split at punctuation
            ("field", ["d2", "d3"]),  # the group
            ("d4", ["d4"]),  # the id
            ("accepted rpi4", ["d1", "d2"]),
            ("nothing-like-it", []),
            ("::", []),
        ],
    )
    async def test_text(self, seeded: httpx.AsyncClient, text: str, expected: list[str]) -> None:
        assert await _search(seeded, {"text": text}) == expected

    async def test_offline_devices_by_check_in_time(self, client: httpx.AsyncClient) -> None:
        # The web UI's "offline" filter: checked in before the threshold, or never.
        for device, when in (("early", "2024-05-01T10:00:00Z"), ("late", "2024-05-01T12:00:00Z")):
            r = await client.patch(
                f"{INTERNAL_V1}/tenants//device/{device}/attribute/scope/system",
                json=[{"name": "check_in_time", "value": when}],
            )
            assert r.status_code == 200, r.text
        await put_inventory(client, "never", [{"name": "device_type", "value": "rpi4"}])
        offline = _filter("system", "check_in_time", "$ltne", "2024-05-01T11:00:00.000Z")
        assert await _search(client, offline) == ["early", "never"]

    async def test_text_with_filters(self, seeded: httpx.AsyncClient) -> None:
        body = {"text": "garage", **_filter("inventory", "device_type", "$eq", "bbb")}
        assert await _search(seeded, body) == ["d3"]

    async def test_other_tenants_are_invisible(self, client: httpx.AsyncClient) -> None:
        await _seed(client)
        await put_inventory(
            client, "t1", [{"name": "device_type", "value": "rpi4"}], tenant="other"
        )
        assert await _search(client, {"text": "rpi4"}, user_headers("other")) == ["t1"]
        assert await _search(client, {"device_ids": ["d1"]}, user_headers("other")) == []

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (_filter("inventory", "n", "$ltne", True), "string or a number"),
            (_filter("inventory", "n", "$where", "1"), "$where"),
            (_filter("inventory", "n", "eq", 1), "eq"),
            (_filter("nosuch", "n", "$eq", 1), "nosuch"),
            (_filter("inventory", "", "$eq", 1), "attribute"),
            (_filter("inventory", "n", "$eq", None), "null"),
            (_filter("inventory", "n", "$eq", {"$gt": 0}), "string, a number"),
            (_filter("inventory", "n", "$in", "x"), "array"),
            (_filter("inventory", "n", "$nin", 1), "array"),
            (_filter("inventory", "n", "$in", [{"a": 1}]), "string, a number"),
            (_filter("inventory", "n", "$exists", "yes"), "boolean"),
            (_filter("inventory", "n", "$gt", True), "string or a number"),
            (_filter("inventory", "hostname", "$regex", "(unclosed"), "regular expression"),
            (_filter("inventory", "hostname", "$regex", 5), "string"),
            (_filter("inventory", "hostname", "$regex", "/x(/i"), "regular expression"),
            ({"filters": [{"scope": "inventory", "attribute": "n", "type": "$eq"}]}, "value"),
            ({"filters": {"scope": "inventory"}}, "filters"),
            ({"sort": [{"scope": "inventory", "attribute": "n", "order": "up"}]}, "sort order"),
            ({"sort": [{"scope": "bad", "attribute": "n", "order": "asc"}]}, "scope"),
            ({"attributes": [{"scope": "bad", "attribute": "n"}]}, "scope"),
            ({"per_page": 501}, "per_page"),
            ({"per_page": -1}, "per_page"),
            ({"page": -1}, "page"),
            ({"page": "2"}, "page"),
            ({"page": 1.5}, "page"),
            ({"device_ids": "d1"}, "device_ids"),
            ({"device_ids": [1]}, "device_ids"),
            ({"text": 5}, "text"),
            ([], "object"),
        ],
    )
    async def test_bad_request(self, seeded: httpx.AsyncClient, body: Any, fragment: str) -> None:
        r = await seeded.post(SEARCH, json=body, headers=USER)
        assert_error(r, 400, fragment)

    async def test_malformed_json(self, seeded: httpx.AsyncClient) -> None:
        r = await seeded.post(
            SEARCH, content=b"{", headers={**USER, "Content-Type": "application/json"}
        )
        assert_error(r, 400)

    async def test_requires_a_user(self, seeded: httpx.AsyncClient) -> None:
        assert_error(await seeded.post(SEARCH, json={}), 401)


class TestFilterAttributes:
    async def test_counts(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT_V2}/filters/attributes", headers=USER)
        assert r.status_code == 200
        assert r.json() == []

        await _seed(client)
        r = await client.get(f"{MGMT_V2}/filters/attributes", headers=USER)
        rows = r.json()
        assert rows[:4] == [
            {"name": "status", "scope": "identity", "count": 4},
            {"name": "device_type", "scope": "inventory", "count": 4},
            {"name": "created_ts", "scope": "system", "count": 4},
            {"name": "updated_ts", "scope": "system", "count": 4},
        ]
        assert {"name": "room", "scope": "tags", "count": 1} in rows
        assert {"name": "group", "scope": "system", "count": 2} in rows
        counts = [row["count"] for row in rows]
        assert counts == sorted(counts, reverse=True)

    async def test_per_tenant(self, seeded: httpx.AsyncClient) -> None:
        r = await seeded.get(f"{MGMT_V2}/filters/attributes", headers=user_headers("other"))
        assert r.json() == []


class TestStatistics:
    async def test_by_status_and_tier(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT_V2}/statistics", headers=USER)
        zero = {"standard": 0, "micro": 0, "system": 0}
        assert r.json() == {"devices_by_status": {"accepted": zero, "pending": zero}}

        await _seed(client)
        await set_status(client, "rejected", ["r1"])
        r = await client.patch(
            f"{INTERNAL_V1}/tenants//device/d3/attribute/scope/system",
            json=[{"name": "tier", "value": "micro"}],
        )
        assert r.status_code == 200

        r = await client.get(f"{MGMT_V2}/statistics", headers=USER)
        assert r.json() == {
            "devices_by_status": {
                "accepted": {"standard": 2, "micro": 1, "system": 0},
                "pending": {"standard": 1, "micro": 0, "system": 0},
            }
        }
        r = await client.get(f"{MGMT_V2}/statistics", headers=user_headers("other"))
        assert r.json()["devices_by_status"]["accepted"] == zero


class TestIdentitySearch:
    PATH = "/api/management/v2alpha1/inventory/identities/search"

    async def test_identity_prefix(self, seeded: httpx.AsyncClient) -> None:
        body = {"scope": "identity", "name": "mac", "value_prefix": "02:00"}
        r = await seeded.post(self.PATH, json=body, headers=USER)
        assert r.status_code == 200
        assert [d["id"] for d in r.json()] == ["d1", "d2"]
        assert r.headers["X-Total-Count"] == "2"

    async def test_id_prefix_and_projection(self, seeded: httpx.AsyncClient) -> None:
        body = {
            "scope": "identity",
            "name": "id",
            "value_prefix": "d",
            "per_page": 1,
            "attributes": [{"scope": "identity", "attribute": "mac"}],
        }
        r = await seeded.post(self.PATH, json=body, headers=USER)
        assert [d["id"] for d in r.json()] == ["d1"]
        assert r.headers["X-Total-Count"] == "4"
        assert set(attrs_by_key(r.json()[0])) == {"identity/mac", "system/updated_ts"}

    async def test_tag_prefix_is_literal(self, seeded: httpx.AsyncClient) -> None:
        body = {"scope": "tags", "name": "room", "value_prefix": "Kit"}
        r = await seeded.post(self.PATH, json=body, headers=USER)
        assert [d["id"] for d in r.json()] == ["d1"]
        body = {"scope": "tags", "name": "room", "value_prefix": ".*"}
        r = await seeded.post(self.PATH, json=body, headers=USER)
        assert r.json() == []

    @pytest.mark.parametrize(
        "body",
        [
            {"scope": "inventory", "name": "mac", "value_prefix": "0"},
            {"scope": "identity", "name": "mac"},
            {"scope": "identity", "name": "", "value_prefix": "0"},
            {"scope": "identity", "name": "mac", "value_prefix": "0", "per_page": 1000},
        ],
    )
    async def test_bad_request(self, seeded: httpx.AsyncClient, body: dict[str, Any]) -> None:
        assert_error(await seeded.post(self.PATH, json=body, headers=USER), 400)
