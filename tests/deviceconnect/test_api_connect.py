"""The device's websocket, connection state and the internal provisioning API."""

from __future__ import annotations

import uuid

import pytest
from pymongo import AsyncMongoClient
from websockets.exceptions import InvalidStatus

from common.core.mongo import Document
from tests.deviceconnect.conftest import DEVICE_WS, INTERNAL, MGMT, Running, ServeFactory
from tests.deviceconnect.fakes import device_token, open_ws, user_token
from tests.toolkit import assert_error, eventually
from tests.toolkit.commands import recording

USER = {"Authorization": f"Bearer {user_token()}"}


async def status_of(dc: Running, device_id: str, tenant: str = "") -> str:
    """The device's connection status as a user sees it."""
    headers = {"Authorization": f"Bearer {user_token(tenant=tenant)}"}
    response = await dc.client.get(f"{MGMT}/devices/{device_id}", headers=headers)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


class TestDeviceConnect:
    async def test_connected_then_disconnected(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id):
            response = await dc.client.get(f"{MGMT}/devices/{device_id}", headers=USER)
            assert response.status_code == 200
            body = response.json()
            assert body["device_id"] == device_id
            assert body["status"] == "connected"
            assert set(body) == {"device_id", "status", "created_ts", "updated_ts"}
        await eventually(lambda: stored_status(mongo, db_name, device_id, "disconnected"))
        doc = await mongo[db_name]["devices"].find_one({"_id": device_id})
        assert doc is not None
        assert doc["version"] == 1
        assert await status_of(dc, device_id) == "disconnected"

    async def test_newer_connection_wins(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id) as first, dc.device(device_id):
            await first.ws.wait_closed()
            assert first.ws.close_code == 4000
            assert first.ws.close_reason == "replaced by a newer connection"
            doc = await mongo[db_name]["devices"].find_one({"_id": device_id})
            assert doc is not None
            assert (doc["status"], doc["version"]) == ("connected", 2)
            # The old connection's end did not mark the device disconnected.
            assert await status_of(dc, device_id) == "connected"

    async def test_silent_device_is_dropped(
        self, serve_with: ServeFactory, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        async with serve_with(ping_interval=0.2, ping_timeout=0.3) as dc:
            device_id = str(uuid.uuid4())
            url = dc.ws_url + DEVICE_WS
            async with open_ws(
                url, device_token(device_id), ping_interval=None, close_timeout=0.2
            ) as ws:
                assert await status_of(dc, device_id) == "connected"
                # Stop reading: pings go unanswered, as with a device that lost its network.
                ws.transport.pause_reading()
                await eventually(lambda: stored_status(mongo, db_name, device_id, "disconnected"))

    async def test_no_token(self, dc: Running) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with open_ws(dc.ws_url + DEVICE_WS, None):
                pass
        response = caught.value.response
        assert response.status_code == 401
        assert b"Authorization not present" in response.body

    async def test_user_token_refused(self, dc: Running) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with open_ws(dc.ws_url + DEVICE_WS, user_token()):
                pass
        assert caught.value.response.status_code == 401
        assert b"does not belong to a device" in caught.value.response.body

    async def test_plain_http_refused(self, dc: Running) -> None:
        response = await dc.client.get(DEVICE_WS, headers={"Authorization": "Bearer x"})
        assert_error(response, 400, "not using the websocket protocol")

    async def test_malformed_frame_closes(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with open_ws(dc.ws_url + DEVICE_WS, device_token(device_id)) as ws:
            await ws.send(b"\xc1not msgpack")
            await ws.wait_closed()
            assert ws.close_code == 1003
        await eventually_status(dc, device_id, "disconnected")


async def stored_status(
    mongo: AsyncMongoClient[Document], db_name: str, device_id: str, status: str
) -> bool:
    """Whether the stored connection state of the device is `status`."""
    doc = await mongo[db_name]["devices"].find_one({"_id": device_id})
    return doc is not None and doc["status"] == status


async def eventually_status(dc: Running, device_id: str, status: str, tenant: str = "") -> None:
    """Wait until the device's status, as a user sees it, is `status`."""

    async def check() -> bool:
        return await status_of(dc, device_id, tenant) == status

    await eventually(check)


class TestGetDevice:
    async def test_unknown(self, dc: Running) -> None:
        response = await dc.client.get(f"{MGMT}/devices/{uuid.uuid4()}", headers=USER)
        assert_error(response, 404, "device not found")

    async def test_no_token(self, dc: Running) -> None:
        response = await dc.client.get(f"{MGMT}/devices/{uuid.uuid4()}")
        assert_error(response, 401, "Authorization not present")

    async def test_other_tenant_sees_nothing(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id, tenant="t1"):
            assert await status_of(dc, device_id, tenant="t1") == "connected"
            headers = {"Authorization": f"Bearer {user_token(tenant='t2')}"}
            response = await dc.client.get(f"{MGMT}/devices/{device_id}", headers=headers)
            assert_error(response, 404, "device not found")


class TestProvision:
    async def test_provision_then_status(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        url = f"{INTERNAL}/tenants//devices"
        response = await dc.client.post(url, json={"device_id": device_id})
        assert response.status_code == 201, response.text
        again = await dc.client.post(url, json={"device_id": device_id})
        assert again.status_code == 201
        assert await status_of(dc, device_id) == "disconnected"

    async def test_a_list_in_one_statement(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        url = f"{INTERNAL}/tenants/t1/devices"
        known, new = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
        async with dc.device(known, tenant="t1"):
            with recording(db_name) as recorded:
                response = await dc.client.post(
                    url, json=[{"device_id": d} for d in [known, *new, new[0]]]
                )
            assert response.status_code == 201, response.text
            on_devices = [name for name, command in recorded.commands if command[name] == "devices"]
            assert on_devices == ["insert"]
            # The one connected meanwhile stays connected.
            assert await status_of(dc, known, tenant="t1") == "connected"
        for device_id in new:
            assert await status_of(dc, device_id, tenant="t1") == "disconnected"
        assert await mongo[db_name]["devices"].count_documents({"tenant_id": "t1"}) == 4

    async def test_bad_body(self, dc: Running) -> None:
        response = await dc.client.post(f"{INTERNAL}/tenants/t1/devices", json={"device_id": ""})
        assert_error(response, 400, "device_id")
        response = await dc.client.post(f"{INTERNAL}/tenants/t1/devices", json=[{"device_id": ""}])
        assert_error(response, 400, "device_id")
        too_many = [{"device_id": str(n)} for n in range(101)]
        response = await dc.client.post(f"{INTERNAL}/tenants/t1/devices", json=too_many)
        assert_error(response, 400, "too many bulk items: max 100 items per request")
        response = await dc.client.post(
            f"{INTERNAL}/tenants/t1/devices",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, 400, "failed to decode request body")


class TestDecommission:
    async def test_cuts_off_connected_device(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id, tenant="t1") as device:
            response = await dc.client.delete(f"{INTERNAL}/tenants/t1/devices/{device_id}")
            assert response.status_code == 202
            await device.ws.wait_closed()
            assert device.ws.close_code == 1008
        assert await mongo[db_name]["devices"].find_one({"_id": device_id}) is None
        headers = {"Authorization": f"Bearer {user_token(tenant='t1')}"}
        response = await dc.client.get(f"{MGMT}/devices/{device_id}", headers=headers)
        assert_error(response, 404, "device not found")

    async def test_unknown_device(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        response = await dc.client.delete(f"{INTERNAL}/tenants//devices/{device_id}")
        assert response.status_code == 202
        assert response.content == b""
        # Idempotent: nothing is created for a device deviceconnect did not know.
        assert await mongo[db_name]["devices"].find_one({"_id": device_id}) is None


class TestDisconnect:
    async def test_cuts_off_but_keeps_the_device(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id, tenant="t1") as device:
            response = await dc.client.post(f"{INTERNAL}/tenants/t1/devices/{device_id}/disconnect")
            assert response.status_code == 202
            await device.ws.wait_closed()
            assert device.ws.close_code == 1008
            assert device.ws.close_reason == "the device is no longer accepted"
        await eventually_status(dc, device_id, "disconnected", tenant="t1")

    async def test_not_connected(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        response = await dc.client.post(f"{INTERNAL}/tenants//devices/{device_id}/disconnect")
        assert response.status_code == 202
        assert response.content == b""
        assert await mongo[db_name]["devices"].find_one({"_id": device_id}) is None


class TestDeleteTenant:
    async def test_deletes_and_cuts_off(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        other = str(uuid.uuid4())
        async with dc.device(device_id, tenant="gone") as device, dc.device(other, "kept"):
            response = await dc.client.delete(f"{INTERNAL}/tenants/gone")
            assert response.status_code == 204
            await device.ws.wait_closed()
            assert await mongo[db_name]["devices"].count_documents({"tenant_id": "gone"}) == 0
            assert await status_of(dc, other, tenant="kept") == "connected"


class TestShutdown:
    async def test_drains(self, serve_with: ServeFactory) -> None:
        async with serve_with(shutdown_drain=0.1) as dc:
            device_id = str(uuid.uuid4())
            async with dc.device(device_id) as device:
                response = await dc.client.get(f"{INTERNAL}/shutdown")
                assert response.status_code == 202
                await device.ws.wait_closed()
                assert device.ws.close_code == 1012
            with pytest.raises(InvalidStatus) as caught:
                async with open_ws(dc.ws_url + DEVICE_WS, device_token(device_id)):
                    pass
            assert caught.value.response.status_code == 503
            await eventually_status(dc, device_id, "disconnected")
