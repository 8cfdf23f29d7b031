"""Two instances on one database and one NATS server: the device on one, the user on the other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from services.deviceconnect.app.protocol import PORT_FORWARD, SHELL, Frame, encode
from tests.deviceconnect.conftest import MGMT, Running, ServeFactory
from tests.deviceconnect.fakes import user_token
from tests.deviceconnect.test_api_connect import status_of
from tests.deviceconnect.test_api_sessions import next_frame, start_shell, user_ws
from tests.toolkit import eventually

NATS_URI = os.environ.get("TEST_NATS_URI", "nats://127.0.0.1:4222")
USER = {"Authorization": f"Bearer {user_token()}"}


def _nats_answers() -> bool:
    host, _, port = NATS_URI.removeprefix("nats://").partition(":")
    try:
        with socket.create_connection((host, int(port or 4222)), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _nats_answers(), reason=f"no NATS server at {NATS_URI}")


@pytest.fixture
async def pair(serve_with: ServeFactory) -> AsyncIterator[tuple[Running, Running]]:
    """Two instances sharing the database and NATS."""
    async with (
        serve_with(nats_uri=NATS_URI, nats_keepalive=0.5) as first,
        serve_with(nats_uri=NATS_URI, nats_keepalive=0.5) as second,
    ):
        yield first, second


class TestAcrossInstances:
    async def test_terminal_session(self, pair: tuple[Running, Running]) -> None:
        first, second = pair
        device_id = str(uuid.uuid4())
        async with first.device(device_id) as device:
            assert await status_of(second, device_id) == "connected"
            async with user_ws(second, device_id) as ws:
                sid = await start_shell(ws)
                big = b"q" * 3_000_000  # larger than NATS' payload limit: sent in parts
                await ws.send(encode(Frame(SHELL, "shell", body=big)))
                reply = await next_frame(ws, "shell")
                assert reply.body == b"echo:" + big
                assert reply.sid == sid
            await eventually(lambda: any(f.typ == "stop" for f in device.received))
            stop = next(f for f in device.received if f.typ == "stop")
            assert stop.body == b"user disconnected"
            assert {f.props["user_id"] for f in device.received} == {"user-1"}

    async def test_file_transfer(self, pair: tuple[Running, Running]) -> None:
        first, second = pair
        device_id = str(uuid.uuid4())
        content = os.urandom(200_000)
        async with first.device(device_id) as device:
            url = f"{MGMT}/devices/{device_id}/upload"
            response = await second.client.put(
                url, data={"path": "/tmp/f"}, files={"file": ("f", content)}, headers=USER
            )
            assert response.status_code == 201, response.text
            assert device.files["/tmp/f"] == content
            url = f"{MGMT}/devices/{device_id}/download"
            response = await second.client.get(url, params={"path": "/tmp/f"}, headers=USER)
            assert response.status_code == 200, response.text
            assert response.content == content

    async def test_port_forward_and_commands(self, pair: tuple[Running, Running]) -> None:
        first, second = pair
        device_id = str(uuid.uuid4())
        async with first.device(device_id) as device, user_ws(second, device_id) as ws:
            props = {"connection_id": "c1"}
            body = msgpack.packb({"remote_host": "127.0.0.1", "remote_port": 22, "protocol": "tcp"})
            await ws.send(encode(Frame(PORT_FORWARD, "new", props=props, body=body)))
            assert (await next_frame(ws, "new")).props["connection_id"] == "c1"
            await ws.send(encode(Frame(PORT_FORWARD, "forward", props=props, body=b"ping")))
            assert (await next_frame(ws, "forward")).body == b"ping"
            response = await second.client.post(
                f"{MGMT}/devices/{device_id}/check-update", headers=USER
            )
            assert response.status_code == 202
            await eventually(lambda: len(device.commands) == 1)

    async def test_user_that_never_reads_elsewhere_loses_the_session(
        self, serve_with: ServeFactory
    ) -> None:
        options = {
            "nats_uri": NATS_URI,
            "nats_window": 64 * 1024,
            "session_buffer_size": 64 * 1024,
            "session_stall_timeout": 0.5,
        }
        device_id = str(uuid.uuid4())
        async with (
            serve_with(**options) as first,
            serve_with(**options) as second,
            first.device(device_id) as device,
            user_ws(second, device_id) as ws,
        ):
            sid = await start_shell(ws)
            ws.transport.pause_reading()
            chunk = encode(Frame(SHELL, "shell", sid, {"status": 1}, b"n" * 4096))
            for sent in range(20_000):
                await device.ws.send(chunk)
                if sent % 100 == 0 and any(f.typ == "stop" for f in device.received):
                    break
            # The device's instance stopped the shell on the device itself.
            await eventually(lambda: any(f.typ == "stop" for f in device.received))
            stop = next(f for f in device.received if f.typ == "stop")
            assert stop.body == b"session output not read fast enough"
            ws.transport.resume_reading()
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1008
            assert device.ws.close_code is None

    async def test_newer_connection_elsewhere_wins(self, pair: tuple[Running, Running]) -> None:
        first, second = pair
        device_id = str(uuid.uuid4())
        async with first.device(device_id) as old, second.device(device_id):
            await asyncio.wait_for(old.ws.wait_closed(), 10)
            assert old.ws.close_code == 4000
            assert await status_of(first, device_id) == "connected"

    async def test_instance_gone(self, serve_with: ServeFactory) -> None:
        device_id = str(uuid.uuid4())
        async with serve_with(nats_uri=NATS_URI) as survivor:
            async with serve_with(nats_uri=NATS_URI) as doomed, doomed.device(device_id):
                assert await status_of(survivor, device_id) == "connected"
            # The instance stopped; its device is no longer reported connected.
            assert await status_of(survivor, device_id) == "disconnected"
