"""The management API v2: `/api/management/v2/devauth/...`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from common.core.mongo import Document
from common.core.pages import MAX_PAGE, MAX_PER_PAGE
from tests.deviceauth.conftest import (
    MGMT,
    USER,
    FakeDevice,
    PrivateKey,
    admit,
    list_devices,
    register,
    set_status,
    user_token,
    verify,
)
from tests.toolkit import assert_error, failing_commands

TENANT_A = {"Authorization": f"Bearer {user_token('tenant-a')}"}


async def _preauthorize(
    client: httpx.AsyncClient, device: FakeDevice, *, force: bool | None = None, headers: Any = None
) -> httpx.Response:
    body: dict[str, Any] = {"identity_data": device.identity, "pubkey": device.pubkey}
    if force is not None:
        body["force"] = force
    return await client.post(f"{MGMT}/devices", json=body, headers=headers or USER)


@pytest.fixture
def devices(device_key: Callable[[str], PrivateKey]) -> list[FakeDevice]:
    """Five devices with distinct identities, sharing one fast key type each."""
    kinds = ["p256", "p384", "ed25519", "p521", "p224"]
    return [FakeDevice(device_key(k), {"mac": f"mac-{i}"}) for i, k in enumerate(kinds)]


class TestListDevices:
    async def test_empty(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/devices", headers=USER)
        assert r.status_code == 200
        assert r.json() == []
        assert 'rel="first"' in r.headers["Link"]
        assert "X-Total-Count" not in r.headers

    async def test_requires_a_user(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/devices")
        assert r.status_code == 401
        assert set(r.json()) == {"error", "request_id"}

    async def test_shape_of_a_device(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        await device.authenticate(client)
        [view] = await list_devices(client)
        assert set(view) == {
            "id",
            "identity_data",
            "status",
            "decommissioning",
            "created_ts",
            "updated_ts",
            "auth_sets",
        }
        assert view["identity_data"] == device.identity
        assert view["created_ts"].endswith("Z")
        [auth_set] = view["auth_sets"]
        assert set(auth_set) == {"id", "device_id", "identity_data", "pubkey", "status", "ts"}
        assert auth_set["device_id"] == view["id"]

    async def test_order_status_then_id(
        self, client: httpx.AsyncClient, devices: list[FakeDevice]
    ) -> None:
        for d in devices:
            await d.authenticate(client)
        views = await list_devices(client)
        await set_status(client, views[0]["id"], views[0]["auth_sets"][0]["id"], "rejected")
        await set_status(client, views[1]["id"], views[1]["auth_sets"][0]["id"], "accepted")
        views = await list_devices(client)
        keys = [(v["status"], v["id"]) for v in views]
        assert keys == sorted(keys)
        assert [v["status"] for v in views][:1] == ["accepted"]

    async def test_status_filter(
        self, client: httpx.AsyncClient, devices: list[FakeDevice]
    ) -> None:
        for d in devices[:3]:
            await d.authenticate(client)
        views = await list_devices(client)
        await set_status(client, views[0]["id"], views[0]["auth_sets"][0]["id"], "rejected")
        pending = await list_devices(client, status="pending")
        assert len(pending) == 2
        assert all(v["status"] == "pending" for v in pending)
        r = await client.get(
            f"{MGMT}/devices", params=[("status", "pending"), ("status", "rejected")], headers=USER
        )
        assert len(r.json()) == 3

    async def test_bad_status(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/devices", params={"status": "lost"}, headers=USER)
        assert r.status_code == 400
        assert r.json()["error"].startswith("filter status must be one of")

    async def test_id_filter(self, client: httpx.AsyncClient, devices: list[FakeDevice]) -> None:
        for d in devices:
            await d.authenticate(client)
        views = await list_devices(client)
        wanted = sorted([views[1]["id"], views[3]["id"]])
        r = await client.get(
            f"{MGMT}/devices", params=[("id", wanted[0]), ("id", wanted[1])], headers=USER
        )
        assert sorted(v["id"] for v in r.json()) == wanted
        r = await client.get(f"{MGMT}/devices", params={"id": "no-such-id"}, headers=USER)
        assert r.json() == []

    async def test_paging(self, client: httpx.AsyncClient, devices: list[FakeDevice]) -> None:
        for d in devices:
            await d.authenticate(client)
        everything = [v["id"] for v in await list_devices(client)]
        r = await client.get(f"{MGMT}/devices", params={"per_page": 2}, headers=USER)
        assert [v["id"] for v in r.json()] == everything[:2]
        assert 'rel="next"' in r.headers["Link"]
        assert 'rel="prev"' not in r.headers["Link"]
        r = await client.get(f"{MGMT}/devices", params={"per_page": 2, "page": 3}, headers=USER)
        assert [v["id"] for v in r.json()] == everything[4:]
        assert 'rel="prev"' in r.headers["Link"]
        assert 'rel="next"' not in r.headers["Link"]
        assert "page=2" in r.headers["Link"]

    @pytest.mark.parametrize(
        "params", [{"page": "0"}, {"per_page": "501"}, {"per_page": "x"}, {"page": "-1"}]
    )
    async def test_bad_paging(self, params: dict[str, str], client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/devices", params=params, headers=USER)
        assert r.status_code == 400
        assert set(r.json()) == {"error", "request_id"}

    async def test_page_beyond_what_the_database_can_skip(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        await device.authenticate(client)
        r = await client.get(f"{MGMT}/devices", params={"page": 2**64 + 1}, headers=USER)
        assert r.status_code == 400
        assert r.json() == {
            "error": f"invalid page query: must be at most {MAX_PAGE}",
            "request_id": r.headers["X-MEN-RequestID"],
        }
        r = await client.get(
            f"{MGMT}/devices", params={"page": MAX_PAGE, "per_page": MAX_PER_PAGE}, headers=USER
        )
        assert r.status_code == 200
        assert r.json() == []
        assert f'page={MAX_PAGE - 1}&per_page={MAX_PER_PAGE}>; rel="prev"' in r.headers["Link"]
        assert len(await list_devices(client)) == 1

    async def test_other_tenant_sees_nothing(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        await device.authenticate(client)
        r = await client.get(f"{MGMT}/devices", headers=TENANT_A)
        assert r.json() == []


class TestSearchDevices:
    async def test_json_filters(self, client: httpx.AsyncClient, devices: list[FakeDevice]) -> None:
        for d in devices[:3]:
            await d.authenticate(client)
        views = await list_devices(client)
        await set_status(client, views[0]["id"], views[0]["auth_sets"][0]["id"], "accepted")
        r = await client.post(f"{MGMT}/devices/search", json={"status": "accepted"}, headers=USER)
        assert r.status_code == 200
        assert [v["id"] for v in r.json()] == [views[0]["id"]]
        r = await client.post(
            f"{MGMT}/devices/search",
            json={"status": ["accepted", "pending"], "id": [views[0]["id"], views[2]["id"]]},
            headers=USER,
        )
        assert sorted(v["id"] for v in r.json()) == sorted([views[0]["id"], views[2]["id"]])
        r = await client.post(f"{MGMT}/devices/search", json={"id": views[1]["id"]}, headers=USER)
        assert [v["id"] for v in r.json()] == [views[1]["id"]]
        r = await client.post(f"{MGMT}/devices/search", json={}, headers=USER)
        assert len(r.json()) == 3

    async def test_form_filters(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        await device.authenticate(client)
        r = await client.post(f"{MGMT}/devices/search", data={"status": "pending"}, headers=USER)
        assert r.status_code == 200
        assert len(r.json()) == 1

    async def test_paging(self, client: httpx.AsyncClient, devices: list[FakeDevice]) -> None:
        for d in devices[:3]:
            await d.authenticate(client)
        r = await client.post(
            f"{MGMT}/devices/search", params={"per_page": 2}, json={}, headers=USER
        )
        assert len(r.json()) == 2
        assert 'rel="next"' in r.headers["Link"]

    @pytest.mark.parametrize(
        "body",
        [
            b"{",
            b"[]",
            b'{"status": 1}',
            b'{"status": [1]}',
            b'{"id": {"a": 1}}',
            b'{"status": "lost"}',
            b"",
        ],
    )
    async def test_bad_body(self, body: bytes, client: httpx.AsyncClient) -> None:
        r = await client.post(
            f"{MGMT}/devices/search",
            content=body,
            headers={**USER, "Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert set(r.json()) == {"error", "request_id"}

    async def test_unsupported_media_type(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            f"{MGMT}/devices/search",
            content=b"status=pending",
            headers={**USER, "Content-Type": "text/plain"},
        )
        assert_error(r, 415, "Content-Type 'text/plain' not supported")


class TestCountDevices:
    async def test_counts(self, client: httpx.AsyncClient, devices: list[FakeDevice]) -> None:
        for d in devices[:3]:
            await d.authenticate(client)
        views = await list_devices(client)
        await set_status(client, views[0]["id"], views[0]["auth_sets"][0]["id"], "accepted")
        r = await client.get(f"{MGMT}/devices/count", headers=USER)
        assert r.status_code == 200
        assert r.json() == {"count": 3}
        r = await client.get(f"{MGMT}/devices/count", params={"status": "pending"}, headers=USER)
        assert r.json() == {"count": 2}
        r = await client.get(f"{MGMT}/devices/count", params={"status": "noauth"}, headers=USER)
        assert r.json() == {"count": 0}
        r = await client.get(f"{MGMT}/devices/count", headers=TENANT_A)
        assert r.json() == {"count": 0}

    async def test_bad_status(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/devices/count", params={"status": "x"}, headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == (
            "status must be one of: pending, accepted, rejected, preauthorized, noauth"
        )


class TestGetDevice:
    async def test_found(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.get(f"{MGMT}/devices/{view['id']}", headers=USER)
        assert r.status_code == 200
        assert r.json() == view

    async def test_check_in_time_after_use(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        device_id, _, token = await admit(client, device)
        assert (await verify(client, token)).status_code == 200
        r = await client.get(f"{MGMT}/devices/{device_id}", headers=USER)
        assert r.json()["check_in_time"].endswith("Z")

    async def test_not_found(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/devices/0a1b2c", headers=USER)
        assert r.status_code == 404
        assert r.json()["error"] == "device not found"

    async def test_other_tenant(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.get(f"{MGMT}/devices/{view['id']}", headers=TENANT_A)
        assert_error(r, 404, "device not found")
        assert await list_devices(client) == [view]


class TestPreauthorize:
    async def test_created(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device.identity = {"sn": "SN<1>", "mac": "02:00:00:00:00:09"}
        r = await _preauthorize(client, device)
        assert r.status_code == 201
        assert r.content == b""
        location = r.headers["Location"]
        assert location.startswith("devices/")
        device_id = location.removeprefix("devices/")
        view = (await client.get(f"{MGMT}/devices/{device_id}", headers=USER)).json()
        assert view["status"] == "preauthorized"
        assert view["identity_data"] == device.identity
        [auth_set] = view["auth_sets"]
        assert auth_set["status"] == "preauthorized"
        assert auth_set["pubkey"] == device.pubkey
        stored = await mongo[db_name]["devices"].find_one({"_id": device_id})
        assert stored is not None
        canonical = '{"mac":"02:00:00:00:00:09","sn":"SN\\u003c1\\u003e"}'
        assert stored["id_data"] == canonical
        assert stored["id_data_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()

    async def test_pubkey_is_normalized(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        messy = "junk before\n" + device.pubkey.replace("\n", "\r\n", 1)
        r = await client.post(
            f"{MGMT}/devices",
            json={"identity_data": device.identity, "pubkey": messy},
            headers=USER,
        )
        assert r.status_code == 201
        [view] = await list_devices(client)
        assert view["auth_sets"][0]["pubkey"] == device.pubkey

    async def test_duplicate_returns_existing_device(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        assert (await _preauthorize(client, device)).status_code == 201
        r = await _preauthorize(client, device)
        assert r.status_code == 409
        [view] = await list_devices(client)
        assert r.json() == view

    async def test_duplicate_of_a_registered_device(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        view = await register(client, device)
        other_key = FakeDevice(device_key("ed25519"), device.identity)
        r = await _preauthorize(client, other_key)
        assert r.status_code == 409
        assert r.json()["id"] == view["id"]

    async def test_force_adds_a_key(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        view = await register(client, device)
        new_key = FakeDevice(device_key("ed25519"), device.identity)
        r = await _preauthorize(client, new_key, force=True)
        assert r.status_code == 201
        assert r.headers["Location"] == f"devices/{view['id']}"
        [updated] = await list_devices(client)
        assert updated["status"] == "preauthorized"
        assert sorted(a["status"] for a in updated["auth_sets"]) == ["pending", "preauthorized"]
        assert (await new_key.authenticate(client)).status_code == 200

    @pytest.mark.parametrize(
        "body",
        [
            {"pubkey": "x"},
            {"identity_data": {}, "pubkey": "x"},
            {"identity_data": "mac", "pubkey": "x"},
            {"identity_data": {"mac": "x"}},
            {"identity_data": {"mac": "x"}, "pubkey": "not a key"},
            {"identity_data": {"mac": "x"}, "pubkey": 5},
        ],
    )
    async def test_bad_body(self, body: dict[str, Any], client: httpx.AsyncClient) -> None:
        r = await client.post(f"{MGMT}/devices", json=body, headers=USER)
        assert r.status_code == 400
        assert set(r.json()) == {"error", "request_id"}
        assert await list_devices(client) == []

    async def test_deeply_nested_identity(self, client: httpx.AsyncClient) -> None:
        nested = '{"identity_data": {"a": ' + "[" * 200_000 + "]" * 200_000 + '}, "pubkey": "x"}'
        r = await client.post(
            f"{MGMT}/devices",
            content=nested.encode(),
            headers={**USER, "Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert set(r.json()) == {"error", "request_id"}

    async def test_force_must_be_boolean(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        r = await _preauthorize(client, device, force="yes")  # type: ignore[arg-type]
        assert_error(r, 400, "force")
        assert await list_devices(client) == []

    async def test_not_json(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            f"{MGMT}/devices",
            content=b"{nope",
            headers={**USER, "Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["error"].startswith("failed to decode request body")

    async def test_tenant_scoped(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        r = await _preauthorize(client, device, headers=TENANT_A)
        assert r.status_code == 201
        assert await list_devices(client) == []
        r = await client.get(f"{MGMT}/devices", headers=TENANT_A)
        assert len(r.json()) == 1
        # The same identity may exist in another tenant.
        assert (await _preauthorize(client, device)).status_code == 201


class TestUpdateAuthSetStatus:
    async def test_accept(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await set_status(client, view["id"], view["auth_sets"][0]["id"], "accepted")
        assert r.status_code == 204
        [updated] = await list_devices(client)
        assert updated["status"] == "accepted"
        assert updated["auth_sets"][0]["status"] == "accepted"
        # Accepting twice is harmless.
        r = await set_status(client, view["id"], view["auth_sets"][0]["id"], "accepted")
        assert r.status_code == 204

    async def test_cut_before_the_outbox_write_changes_nothing(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        view = await register(client, device)
        auth_id = view["auth_sets"][0]["id"]
        outbox = mongo[db_name]["outbox"]
        before = await outbox.count_documents({})
        # The acceptance dies at its last write, the outbox entry: none of it may remain.
        async with failing_commands(mongo, ["insert"]):
            with pytest.raises(OperationFailure, match="failCommand"):
                await set_status(client, view["id"], auth_id, "accepted")
        [unchanged] = await list_devices(client)
        assert unchanged["status"] == "pending"
        assert unchanged["auth_sets"][0]["status"] == "pending"
        assert await outbox.count_documents({}) == before
        assert (await device.authenticate(client)).status_code == 401
        # The retry does the whole change once.
        assert (await set_status(client, view["id"], auth_id, "accepted")).status_code == 204
        [accepted] = await list_devices(client)
        assert accepted["status"] == "accepted"
        told = await outbox.count_documents(
            {"peer": "inventory", "path": {"$regex": "status/accepted$"}}
        )
        assert told == 1
        assert (await device.authenticate(client)).status_code == 200

    async def test_accepting_one_key_rejects_the_other(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        device_id, first_auth, first_token = await admit(client, device)
        second = FakeDevice(device_key("ed25519"), device.identity)
        assert (await second.authenticate(client)).status_code == 401
        [view] = await list_devices(client)
        second_auth = next(a["id"] for a in view["auth_sets"] if a["id"] != first_auth)
        assert (await set_status(client, device_id, second_auth, "accepted")).status_code == 204
        [view] = await list_devices(client)
        statuses = {a["id"]: a["status"] for a in view["auth_sets"]}
        assert statuses == {first_auth: "rejected", second_auth: "accepted"}
        assert view["status"] == "accepted"
        assert (await verify(client, first_token)).status_code == 401
        assert (await device.authenticate(client)).status_code == 401
        r = await second.authenticate(client)
        assert r.status_code == 200
        assert (await verify(client, r.text)).status_code == 200

    async def test_reject_revokes(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        device_id, auth_id, token = await admit(client, device)
        assert (await verify(client, token)).status_code == 200
        assert (await set_status(client, device_id, auth_id, "rejected")).status_code == 204
        r = await verify(client, token)
        assert r.status_code == 401
        [view] = await list_devices(client)
        assert view["status"] == "rejected"

    async def test_back_to_pending_revokes(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id, auth_id, token = await admit(client, device)
        assert (await set_status(client, device_id, auth_id, "pending")).status_code == 204
        assert (await verify(client, token)).status_code == 401
        assert await mongo[db_name]["tokens"].count_documents({}) == 0
        [view] = await list_devices(client)
        assert view["status"] == "pending"

    async def test_rejected_can_be_accepted(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        view = await register(client, device)
        auth_id = view["auth_sets"][0]["id"]
        assert (await set_status(client, view["id"], auth_id, "rejected")).status_code == 204
        assert_error(
            await set_status(client, view["id"], auth_id, "rejected"), 400, "dev auth: bad request"
        )
        assert (await set_status(client, view["id"], auth_id, "accepted")).status_code == 204
        assert (await device.authenticate(client)).status_code == 200
        [accepted] = await list_devices(client)
        assert accepted["status"] == "accepted"

    async def test_preauthorized_cannot_be_set_by_hand(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        r = await _preauthorize(client, device)
        device_id = r.headers["Location"].removeprefix("devices/")
        [view] = await list_devices(client)
        auth_id = view["auth_sets"][0]["id"]
        for status in ("accepted", "pending", "rejected"):
            r = await set_status(client, device_id, auth_id, status)
            assert r.status_code == 400
            assert r.json()["error"] == "dev auth: bad request"

    @pytest.mark.parametrize("status", ["preauthorized", "noauth", "ACCEPTED", ""])
    async def test_bad_status(
        self, status: str, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        view = await register(client, device)
        r = await set_status(client, view["id"], view["auth_sets"][0]["id"], status)
        assert r.status_code == 400
        assert r.json()["error"] == "incorrect device status"

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (b"{", "failed to decode request body"),
            (b"{}", "status"),
            (b'{"status": 1}', "status"),
            (b"[]", "invalid request"),
        ],
    )
    async def test_bad_body(
        self, body: bytes, fragment: str, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        view = await register(client, device)
        r = await client.put(
            f"{MGMT}/devices/{view['id']}/auth/{view['auth_sets'][0]['id']}/status",
            content=body,
            headers={**USER, "Content-Type": "application/json"},
        )
        assert_error(r, 400, fragment)
        assert await list_devices(client) == [view]

    async def test_unknown_ids(
        self, client: httpx.AsyncClient, device: FakeDevice, devices: list[FakeDevice]
    ) -> None:
        view = await register(client, device)
        other = await register(client, devices[1])
        auth_id = view["auth_sets"][0]["id"]
        assert (await set_status(client, view["id"], "nope", "accepted")).status_code == 404
        assert (await set_status(client, "nope", auth_id, "accepted")).status_code == 404
        # An auth set of another device is not this device's.
        r = await set_status(client, other["id"], auth_id, "accepted")
        assert r.status_code == 404
        assert r.json()["error"] == "authorization set not found"
        r = await client.put(
            f"{MGMT}/devices/{view['id']}/auth/{auth_id}/status",
            json={"status": "accepted"},
            headers=TENANT_A,
        )
        assert r.status_code == 404

    async def test_device_limit(self, client: httpx.AsyncClient, devices: list[FakeDevice]) -> None:
        r = await client.put(
            "/api/internal/v1/devauth/tenant//limits/max_devices", json={"limit": 1}
        )
        assert r.status_code == 204
        first = await register(client, devices[0])
        second = await register(client, devices[1])
        r = await set_status(client, first["id"], first["auth_sets"][0]["id"], "accepted")
        assert r.status_code == 204
        r = await set_status(client, second["id"], second["auth_sets"][0]["id"], "accepted")
        assert r.status_code == 422
        assert r.json()["error"] == "maximum number of accepted devices reached"
        # Re-accepting a device that is already accepted does not count twice.
        other_key = FakeDevice(devices[2].key, devices[0].identity)
        await other_key.authenticate(client)
        [view] = [v for v in await list_devices(client) if v["id"] == first["id"]]
        new_auth = next(a["id"] for a in view["auth_sets"] if a["status"] == "pending")
        assert (await set_status(client, first["id"], new_auth, "accepted")).status_code == 204


class TestGetAuthSetStatus:
    async def test_found(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        auth_id = view["auth_sets"][0]["id"]
        r = await client.get(f"{MGMT}/devices/{view['id']}/auth/{auth_id}/status", headers=USER)
        assert r.status_code == 200
        assert r.json() == {"status": "pending"}

    async def test_not_found(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.get(f"{MGMT}/devices/{view['id']}/auth/nope/status", headers=USER)
        assert r.status_code == 404
        assert set(r.json()) == {"error", "request_id"}


class TestDeleteAuthSet:
    async def test_pending_set(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.delete(
            f"{MGMT}/devices/{view['id']}/auth/{view['auth_sets'][0]['id']}", headers=USER
        )
        assert r.status_code == 204
        r = await client.get(f"{MGMT}/devices/{view['id']}", headers=USER)
        assert r.json()["status"] == "noauth"
        assert r.json()["auth_sets"] == []

    async def test_accepted_set_revokes(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        device_id, auth_id, token = await admit(client, device)
        r = await client.delete(f"{MGMT}/devices/{device_id}/auth/{auth_id}", headers=USER)
        assert r.status_code == 204
        assert (await verify(client, token)).status_code == 401
        # The device starts over as pending.
        assert (await device.authenticate(client)).status_code == 401
        [view] = await list_devices(client)
        assert view["id"] == device_id
        assert view["status"] == "pending"

    async def test_last_preauthorized_set_deletes_device(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        r = await _preauthorize(client, device)
        device_id = r.headers["Location"].removeprefix("devices/")
        [view] = await list_devices(client)
        r = await client.delete(
            f"{MGMT}/devices/{device_id}/auth/{view['auth_sets'][0]['id']}", headers=USER
        )
        assert r.status_code == 204
        assert (await client.get(f"{MGMT}/devices/{device_id}", headers=USER)).status_code == 404
        effects = await mongo[db_name]["outbox"].find({"method": "DELETE"}).to_list()
        assert [e["path"] for e in effects] == [
            f"/api/internal/v1/inventory/tenants//devices/{device_id}"
        ]

    async def test_not_found(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.delete(f"{MGMT}/devices/{view['id']}/auth/nope", headers=USER)
        assert r.status_code == 404
        r = await client.delete(
            f"{MGMT}/devices/nope/auth/{view['auth_sets'][0]['id']}", headers=USER
        )
        assert r.status_code == 404
        assert len((await list_devices(client))[0]["auth_sets"]) == 1


class TestDecommissionDevice:
    async def test_decommission(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id, _, token = await admit(client, device)
        r = await client.delete(f"{MGMT}/devices/{device_id}", headers=USER)
        assert r.status_code == 204
        assert (await verify(client, token)).status_code == 401
        assert (await client.get(f"{MGMT}/devices/{device_id}", headers=USER)).status_code == 404
        db = mongo[db_name]
        for coll in ("devices", "auth_sets", "tokens"):
            assert await db[coll].count_documents({}) == 0
        deletes = await db["outbox"].find({"method": "DELETE"}).sort("_id", 1).to_list()
        assert {(e["peer"], e["path"]) for e in deletes} == {
            (
                "deployments",
                f"/api/internal/v1/deployments/tenants//deployments/devices/{device_id}",
            ),
            ("deviceconnect", f"/api/internal/v1/deviceconnect/tenants//devices/{device_id}"),
            ("deviceconfig", f"/api/internal/v1/deviceconfig/tenants//devices/{device_id}"),
            ("devicemonitor", f"/api/internal/v1/devicemonitor/tenants//devices/{device_id}"),
            ("inventory", f"/api/internal/v1/inventory/tenants//devices/{device_id}"),
            ("iot_manager", f"/api/internal/v1/iot-manager/tenants//devices/{device_id}"),
        }
        # A decommissioned device that comes back is a new, pending device.
        assert (await device.authenticate(client)).status_code == 401
        [view] = await list_devices(client)
        assert view["id"] != device_id
        assert view["status"] == "pending"

    async def test_cut_before_the_outbox_write_changes_nothing(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id, _, token = await admit(client, device)
        outbox = mongo[db_name]["outbox"]
        async with failing_commands(mongo, ["insert"]):
            with pytest.raises(OperationFailure, match="failCommand"):
                await client.delete(f"{MGMT}/devices/{device_id}", headers=USER)
        # Device, auth set and token are all still there, and no peer is told anything.
        assert (await client.get(f"{MGMT}/devices/{device_id}", headers=USER)).status_code == 200
        assert (await verify(client, token)).status_code == 200
        assert await outbox.count_documents({"method": "DELETE"}) == 0
        assert (await client.delete(f"{MGMT}/devices/{device_id}", headers=USER)).status_code == 204
        assert (await verify(client, token)).status_code == 401
        for coll in ("devices", "auth_sets", "tokens"):
            assert await mongo[db_name][coll].count_documents({}) == 0
        # Every peer is told once.
        deletes = await outbox.find({"method": "DELETE"}).to_list()
        told = sorted(e["peer"] for e in deletes)
        assert told == [
            "deployments",
            "deviceconfig",
            "deviceconnect",
            "devicemonitor",
            "inventory",
            "iot_manager",
        ]

    async def test_not_found(self, client: httpx.AsyncClient) -> None:
        r = await client.delete(f"{MGMT}/devices/nope", headers=USER)
        assert r.status_code == 404
        assert r.json()["error"] == "device not found"

    async def test_other_tenant(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.delete(f"{MGMT}/devices/{view['id']}", headers=TENANT_A)
        assert r.status_code == 404
        assert len(await list_devices(client)) == 1


class TestRevokeToken:
    async def test_revoke(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        _, auth_id, token = await admit(client, device)
        r = await client.delete(f"{MGMT}/tokens/{auth_id}", headers=USER)
        assert r.status_code == 204
        assert_error(await verify(client, token), 401, "token invalid")
        r = await client.delete(f"{MGMT}/tokens/{auth_id}", headers=USER)
        assert_error(r, 404, "token not found")
        # The device is still accepted and simply asks for a new token.
        r = await device.authenticate(client)
        assert r.status_code == 200
        assert (await verify(client, r.text)).status_code == 200

    async def test_other_tenant(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        _, auth_id, token = await admit(client, device)
        r = await client.delete(f"{MGMT}/tokens/{auth_id}", headers=TENANT_A)
        assert_error(r, 404, "token not found")
        assert (await verify(client, token)).status_code == 200


class TestGetLimit:
    async def test_default_unlimited(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/limits/max_devices", headers=USER)
        assert r.status_code == 200
        assert r.json() == {"limit": 0}

    async def test_set_limit(self, client: httpx.AsyncClient) -> None:
        await client.put("/api/internal/v1/devauth/tenant//limits/max_devices", json={"limit": 7})
        r = await client.get(f"{MGMT}/limits/max_devices", headers=USER)
        assert r.json() == {"limit": 7}
        r = await client.get(f"{MGMT}/limits/max_devices", headers=TENANT_A)
        assert r.json() == {"limit": 0}

    async def test_unsupported_limit(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/limits/max_users", headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == "unsupported limit max_users"
