"""File transfers over the device's websocket: download and upload, streamed and acked."""

from __future__ import annotations

import os
import uuid

import msgpack
import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.deviceconnect.conftest import MGMT, Running, ServeFactory
from tests.deviceconnect.fakes import user_token
from tests.toolkit import assert_error

USER = {"Authorization": f"Bearer {user_token()}"}


def _form(
    path: str | None, data: bytes, **fields: str
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    values = dict(fields)
    if path is not None:
        values["path"] = path
    return values, {"file": ("local.bin", data)}


class TestDownload:
    async def test_streams_the_file(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        content = os.urandom(100_000)
        async with dc.device(device_id) as device:
            device.files["/etc/big.bin"] = content
            url = f"{MGMT}/devices/{device_id}/download"
            response = await dc.client.get(url, params={"path": "/etc/big.bin"}, headers=USER)
            assert response.status_code == 200, response.text
            assert response.content == content
            assert response.headers["content-type"] == "application/octet-stream"
            assert response.headers["x-men-file-path"] == "/etc/big.bin"
            assert response.headers["x-men-file-size"] == str(len(content))
            assert response.headers["x-men-file-mode"] == "644"
            assert response.headers["x-men-file-uid"] == "0"
            acks = [f for f in device.received if f.typ == "ack"]
            assert acks[-1].props["offset"] == len(content)
            assert device.received[-1].typ == "close"
        effects = await mongo[db_name]["outbox"].find({"peer": "auditlogs"}).to_list()
        assert [e["body"]["action"] for e in effects] == ["download_file"]
        assert effects[0]["body"]["meta"]["path"] == ["/etc/big.bin"]

    async def test_missing_file(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id):
            url = f"{MGMT}/devices/{device_id}/download"
            response = await dc.client.get(url, params={"path": "/nope"}, headers=USER)
            assert_error(response, 400, "no such file or directory")

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("", "path: cannot be blank"),
            ("relative/x", "path: must be absolute"),
            ("/etc/../shadow", "must not contain '..'"),
            ("/etc/x\x00y", "NUL"),
        ],
    )
    async def test_bad_path(self, dc: Running, path: str, message: str) -> None:
        url = f"{MGMT}/devices/{uuid.uuid4()}/download"
        response = await dc.client.get(url, params={"path": path}, headers=USER)
        assert_error(response, 400, message)

    async def test_device_not_connected(self, dc: Running) -> None:
        url = f"{MGMT}/devices/{uuid.uuid4()}/download"
        response = await dc.client.get(url, params={"path": "/x"}, headers=USER)
        assert_error(response, 409, "device disconnected")

    async def test_device_silent(self, serve_with: ServeFactory) -> None:
        async with serve_with(file_transfer_timeout=0.3) as dc:
            device_id = str(uuid.uuid4())
            async with dc.device(device_id) as device:
                device.answer = False
                url = f"{MGMT}/devices/{device_id}/download"
                response = await dc.client.get(url, params={"path": "/x"}, headers=USER)
                assert_error(response, 408, "file transfer timed out")

    async def test_no_token(self, dc: Running) -> None:
        response = await dc.client.get(f"{MGMT}/devices/x/download", params={"path": "/x"})
        assert_error(response, 401, "Authorization")


class TestUpload:
    async def test_streams_the_file(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        content = os.urandom(300_001)
        async with dc.device(device_id) as device:
            data, files = _form("/tmp/up.bin", content, mode="600", uid="1000")
            url = f"{MGMT}/devices/{device_id}/upload"
            response = await dc.client.put(url, data=data, files=files, headers=USER)
            assert response.status_code == 201, response.text
            assert response.content == b""
            assert device.files["/tmp/up.bin"] == content
            put = next(f for f in device.received if f.typ == "put_file")

            request = msgpack.unpackb(put.body)
            assert request == {
                "path": "/tmp/up.bin",
                "src_path": "local.bin",
                "mode": 0o600,
                "uid": 1000,
            }
            chunks = [f for f in device.received if f.typ == "file_chunk"]
            assert max(len(f.body) for f in chunks) == 4096
            assert chunks[-1].body == b""
        effects = await mongo[db_name]["outbox"].find({"peer": "auditlogs"}).to_list()
        assert [e["body"]["action"] for e in effects] == ["upload_file"]

    async def test_too_large(self, serve_with: ServeFactory) -> None:
        async with serve_with(max_file_size=10_000) as dc:
            device_id = str(uuid.uuid4())
            async with dc.device(device_id) as device:
                data, files = _form("/tmp/big", b"x" * 20_000)
                url = f"{MGMT}/devices/{device_id}/upload"
                response = await dc.client.put(url, data=data, files=files, headers=USER)
                assert_error(response, 413, "exceeds the limit of 10000 bytes")
                assert "/tmp/big" not in device.files
                assert any(f.typ == "error" for f in device.received)

    async def test_missing_path(self, dc: Running) -> None:
        data, files = _form(None, b"x")
        response = await dc.client.put(
            f"{MGMT}/devices/{uuid.uuid4()}/upload", data=data, files=files, headers=USER
        )
        assert_error(response, 400, "path: cannot be blank")

    async def test_missing_file(self, dc: Running) -> None:
        response = await dc.client.put(
            f"{MGMT}/devices/{uuid.uuid4()}/upload",
            data={"path": "/tmp/x"},
            files={"other": ("a", b"b")},
            headers=USER,
        )
        assert_error(response, 400, "upload file is required")

    async def test_bad_mode(self, dc: Running) -> None:
        data, files = _form("/tmp/x", b"x", mode="rwx")
        response = await dc.client.put(
            f"{MGMT}/devices/{uuid.uuid4()}/upload", data=data, files=files, headers=USER
        )
        assert_error(response, 400, "mode: must be an octal integer")

    async def test_not_multipart(self, dc: Running) -> None:
        response = await dc.client.put(
            f"{MGMT}/devices/{uuid.uuid4()}/upload", content=b"x", headers=USER
        )
        assert_error(response, 400, "multipart/form-data")

    async def test_device_not_connected(self, dc: Running) -> None:
        data, files = _form("/tmp/x", b"x")
        response = await dc.client.put(
            f"{MGMT}/devices/{uuid.uuid4()}/upload", data=data, files=files, headers=USER
        )
        assert_error(response, 409, "device disconnected")
