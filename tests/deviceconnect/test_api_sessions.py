"""User sessions: the websocket bridge, stamping, recording, playback, audit events, limits."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgpack
import pytest
from pymongo import AsyncMongoClient
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from common.core.mongo import Document
from services.deviceconnect.app.protocol import (
    CONTROL,
    MENDER_CLIENT,
    PORT_FORWARD,
    SHELL,
    Frame,
    decode,
    encode,
)
from tests.auditlogs.live import live_auditlogs
from tests.deviceconnect.conftest import INTERNAL, MGMT, Running, ServeFactory
from tests.deviceconnect.fakes import open_ws, user_token
from tests.toolkit import assert_error, eventually


@asynccontextmanager
async def user_ws(
    dc: Running, device_id: str, user: str = "user-1", tenant: str = ""
) -> AsyncIterator[ClientConnection]:
    """A user's websocket to the device."""
    url = f"{dc.ws_url}{MGMT}/devices/{device_id}/connect"
    async with open_ws(url, user_token(user, tenant), close_timeout=1) as ws:
        yield ws


async def next_frame(ws: ClientConnection, typ: str | None = None) -> Frame:
    """The next frame (of type `typ`) the user receives."""
    async with asyncio.timeout(10):
        while True:
            data = await ws.recv()
            assert isinstance(data, bytes)
            frame = decode(data)
            if typ is None or frame.typ == typ:
                return frame


async def start_shell(ws: ClientConnection) -> str:
    """Start a shell as mender-cli does (no session id); return the session id."""
    await ws.send(encode(Frame(SHELL, "new", props={"terminal_width": 80, "terminal_height": 24})))
    reply = await next_frame(ws, "new")
    assert reply.body == b"Shell started"
    return reply.sid


class TestTerminal:
    async def test_shell_round_trip(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id) as device, user_ws(dc, device_id) as ws:
            sid = await start_shell(ws)
            await ws.send(encode(Frame(SHELL, "shell", "forged-sid", body=b"ls\n")))
            output = await next_frame(ws, "shell")
            assert output.body == b"echo:ls\n"
            assert output.sid == sid
            # Recorded at once, with an expiry even if this instance died before it ended.
            stored = await mongo[db_name]["sessions"].find_one({"_id": sid})
            assert stored is not None
            assert (stored["device_id"], stored["user_id"]) == (device_id, "user-1")
            assert stored.get("end_ts") is None
            assert stored["expire_ts"] > stored["start_ts"]
            sent = [f for f in device.received if f.proto == SHELL]
            assert [f.typ for f in sent] == ["new", "shell"]
            # The server stamps its session id and the user id on every frame.
            assert {f.sid for f in sent} == {sid}
            assert all(f.props["user_id"] == "user-1" for f in sent)
            assert sent[0].props["terminal_width"] == 80

    async def test_users_get_their_own_sessions(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with (
            dc.device(device_id),
            user_ws(dc, device_id, "alice") as alice,
            user_ws(dc, device_id, "bob") as bob,
        ):
            sid_a, sid_b = await start_shell(alice), await start_shell(bob)
            assert sid_a != sid_b
            await alice.send(encode(Frame(SHELL, "shell", sid_b, body=b"alice\n")))
            await bob.send(encode(Frame(SHELL, "shell", sid_a, body=b"bob\n")))
            assert (await next_frame(alice, "shell")).body == b"echo:alice\n"
            assert (await next_frame(bob, "shell")).body == b"echo:bob\n"

    async def test_user_leaving_stops_the_shell(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id) as device:
            async with user_ws(dc, device_id) as ws:
                sid = await start_shell(ws)
            await eventually(lambda: any(f.typ == "stop" for f in device.received))
            stop = next(f for f in device.received if f.typ == "stop")
            assert (stop.sid, stop.props["status"], stop.body) == (sid, 2, b"user disconnected")

    async def test_device_leaving_closes_the_user(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id) as device, user_ws(dc, device_id) as ws:
            await start_shell(ws)
            await device.ws.close()
            with pytest.raises(ConnectionClosed):
                await next_frame(ws)
            assert ws.close_code == 1000
            assert ws.close_reason == "device disconnected"

    async def test_device_not_connected(self, dc: Running) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with user_ws(dc, str(uuid.uuid4())):
                pass
        assert caught.value.response.status_code == 404
        assert b"device disconnected" in caught.value.response.body

    async def test_other_tenant_cannot_connect(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id, tenant="t1"):
            with pytest.raises(InvalidStatus) as caught:
                async with user_ws(dc, device_id, tenant="t2"):
                    pass
            assert caught.value.response.status_code == 404

    async def test_no_token(self, dc: Running) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with open_ws(f"{dc.ws_url}{MGMT}/devices/x/connect", None):
                pass
        assert caught.value.response.status_code == 401

    async def test_plain_http_refused(self, dc: Running) -> None:
        response = await dc.client.get(f"{MGMT}/devices/x/connect")
        assert_error(response, 400, "not using the websocket protocol")


class TestHostileFrames:
    async def test_unknown_type_answered_with_an_error(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id) as device, user_ws(dc, device_id) as ws:
            await ws.send(encode(Frame(SHELL, "format-disk")))
            await ws.send(encode(Frame(9, "x")))
            first, second = await next_frame(ws, "error"), await next_frame(ws, "error")
            assert first.proto == CONTROL
            assert msgpack.unpackb(first.body)["err"] == "unknown message type 1/'format-disk'"
            assert msgpack.unpackb(second.body)["msgproto"] == 9
            # Nothing reached the device, and the session goes on.
            assert device.received == []
            await start_shell(ws)

    async def test_malformed_frame_closes_the_session(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id), user_ws(dc, device_id) as ws:
            await ws.send(b"\x81\xa3hdr\xc0")
            with pytest.raises(ConnectionClosed):
                await next_frame(ws)
            assert ws.close_code == 1003
            assert "header" in (ws.close_reason or "")

    async def test_oversized_frame_closes_the_session(self, serve_with: ServeFactory) -> None:
        async with serve_with(max_message_size=16 * 1024) as dc:
            device_id = str(uuid.uuid4())
            async with dc.device(device_id) as device, user_ws(dc, device_id) as ws:
                await ws.send(encode(Frame(SHELL, "shell", body=b"x" * 20_000)))
                with pytest.raises(ConnectionClosed):
                    await next_frame(ws)
                assert ws.close_code == 1009
                assert device.received == []

    async def test_device_cannot_reach_another_devices_session(self, dc: Running) -> None:
        device_a, device_b = str(uuid.uuid4()), str(uuid.uuid4())
        async with dc.device(device_a), dc.device(device_b) as other, user_ws(dc, device_a) as ws:
            sid = await start_shell(ws)
            forged = Frame(SHELL, "shell", sid, {"status": 1}, b"injected")
            await other.send(forged)
            await ws.send(encode(Frame(SHELL, "shell", body=b"real\n")))
            # The next output is the session's own device's, not the injected frame.
            assert (await next_frame(ws, "shell")).body == b"echo:real\n"


class TestSlowUser:
    async def test_user_that_never_reads_loses_the_session(self, serve_with: ServeFactory) -> None:
        async with serve_with(session_buffer_size=64 * 1024, session_stall_timeout=0.5) as dc:
            device_id = str(uuid.uuid4())
            async with dc.device(device_id) as device, user_ws(dc, device_id) as ws:
                sid = await start_shell(ws)
                ws.transport.pause_reading()
                chunk = encode(Frame(SHELL, "shell", sid, {"status": 1}, b"y" * 4096))
                # Until the kernel's socket buffers, the server's write buffer and the
                # session buffer are full (at most 80 MiB here).
                for sent in range(20_000):
                    await device.ws.send(chunk)
                    if sent % 100 == 0 and any(f.typ == "stop" for f in device.received):
                        break
                await eventually(lambda: any(f.typ == "stop" for f in device.received))
                ws.transport.resume_reading()
                _ = [data async for data in _until_closed(ws)]
                assert ws.close_code == 1008
                assert ws.close_reason == "session output not read fast enough"
                # The device itself stays connected.
                assert device.ws.close_code is None

    async def test_fast_output_waits_for_a_slow_reader(self, serve_with: ServeFactory) -> None:
        async with serve_with(
            session_buffer_size=64 * 1024,
            session_stall_timeout=5,
            recording_max_size=128 * 1024 * 1024,
        ) as dc:
            device_id = str(uuid.uuid4())
            async with dc.device(device_id) as device, user_ws(dc, device_id) as ws:
                sid = await start_shell(ws)
                ws.transport.pause_reading()
                chunk = encode(Frame(SHELL, "shell", sid, {"status": 1}, b"w" * 4096))

                # 64 MiB: more than the kernel's socket buffers of both hops hold.
                frames = 16_384

                async def flood() -> None:
                    for _ in range(frames):
                        await device.ws.send(chunk)

                sender = asyncio.create_task(flood())
                await asyncio.sleep(1)
                # The device is held back while the user does not read...
                assert not sender.done()
                ws.transport.resume_reading()
                received = 0
                while received < frames * 4096:
                    received += len((await next_frame(ws, "shell")).body)
                await sender
                # ...and nothing was lost once the user read again.
                assert received == frames * 4096
                assert not any(f.typ == "stop" for f in device.received)


class TestRecordingAndPlayback:
    async def test_playback_replays_the_output(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id), user_ws(dc, device_id) as ws:
            sid = await start_shell(ws)
            await ws.send(
                encode(Frame(SHELL, "resize", props={"terminal_width": 100, "terminal_height": 30}))
            )
            for line in (b"one\n", b"two\n"):
                await ws.send(encode(Frame(SHELL, "shell", body=line)))
                await next_frame(ws, "shell")
                await asyncio.sleep(0.3)
        await eventually(lambda: _ended(mongo, db_name, sid))
        url = f"{dc.ws_url}{MGMT}/sessions/{sid}/playback"
        started = time.monotonic()
        async with open_ws(url, user_token("auditor")) as player:
            frames = [decode(m) async for m in _until_closed(player)]
            assert player.close_code == 1000
        elapsed = time.monotonic() - started
        assert [(f.typ, f.body) for f in frames] == [
            ("resize", b""),
            ("shell", b"echo:one\n"),
            ("shell", b"echo:two\n"),
        ]
        assert frames[0].props == {"terminal_width": 100, "terminal_height": 30}
        assert {f.sid for f in frames} == {sid}
        # At the original pace: the pause between the two lines is kept.
        assert elapsed >= 0.25
        session = await mongo[db_name]["sessions"].find_one({"_id": sid})
        assert session is not None
        assert session["kinds"] == ["terminal"]
        assert session["bytes_recorded"] == len(b"echo:one\necho:two\n")
        assert session["expire_ts"] > session["end_ts"]

    async def test_playback_faster(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id), user_ws(dc, device_id) as ws:
            sid = await start_shell(ws)
            await ws.send(encode(Frame(SHELL, "shell", body=b"x\n")))
            await next_frame(ws, "shell")
        await asyncio.sleep(0.2)
        url = f"{dc.ws_url}{MGMT}/sessions/{sid}/playback?sleep_ms=0"
        async with open_ws(url, user_token()) as player:
            frames = [decode(m) async for m in _until_closed(player)]
        assert [f.body for f in frames] == [b"echo:x\n"]

    async def test_unknown_session(self, dc: Running) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with open_ws(f"{dc.ws_url}{MGMT}/sessions/nope/playback", user_token()):
                pass
        assert caught.value.response.status_code == 404
        assert b"session not found" in caught.value.response.body

    async def test_other_tenant_session(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id, "t1"), user_ws(dc, device_id, tenant="t1") as ws:
            sid = await start_shell(ws)
        url = f"{dc.ws_url}{MGMT}/sessions/{sid}/playback"
        with pytest.raises(InvalidStatus) as caught:
            async with open_ws(url, user_token(tenant="t2")):
                pass
        assert caught.value.response.status_code == 404

    async def test_bad_sleep(self, dc: Running) -> None:
        url = f"{dc.ws_url}{MGMT}/sessions/x/playback?sleep_ms=-5"
        with pytest.raises(InvalidStatus) as caught:
            async with open_ws(url, user_token()):
                pass
        assert caught.value.response.status_code == 400
        assert b"sleep_ms" in caught.value.response.body

    async def test_recording_limit_stops_the_session(self, serve_with: ServeFactory) -> None:
        async with serve_with(recording_max_size=2048) as dc:
            device_id = str(uuid.uuid4())
            async with dc.device(device_id) as device, user_ws(dc, device_id) as ws:
                await start_shell(ws)
                await ws.send(encode(Frame(SHELL, "shell", body=b"z" * 3000)))
                limit = await next_frame(ws, "shell")
                assert (limit.props["status"], limit.body) == (2, b"session byte limit exceeded")
                with pytest.raises(ConnectionClosed):
                    await next_frame(ws)
                assert ws.close_code == 1008
                await eventually(lambda: any(f.typ == "stop" for f in device.received))


class TestAuditEvents:
    async def test_terminal_and_port_forward(
        self, dc: Running, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id, "t1") as device:
            async with user_ws(dc, device_id, tenant="t1") as ws:
                sid = await start_shell(ws)
                await ws.send(encode(Frame(SHELL, "stop")))
                await next_frame(ws, "stop")
                props = {"connection_id": "c1"}
                await ws.send(encode(Frame(PORT_FORWARD, "new", props=props, body=b"{}")))
                await next_frame(ws, "new")
            # The port forward is closed on the device when the user leaves.
            await eventually(lambda: any(f.typ == "close" for f in device.received))
        await eventually(lambda: _ended(mongo, db_name, sid))
        effects = await mongo[db_name]["outbox"].find({"peer": "auditlogs"}).to_list()
        actions = [e["body"]["action"] for e in effects]
        assert actions == [
            "open_terminal",
            "close_terminal",
            "open_portforward",
            "close_portforward",
        ]
        first = effects[0]
        assert first["path"] == "/api/internal/v1/auditlogs/tenants/t1/logs"
        assert first["body"]["actor"] == {"id": "user-1", "type": "user"}
        assert first["body"]["object"] == {"id": device_id, "type": "device"}
        assert first["body"]["meta"] == {
            "session_id": [sid],
            "request_id": [first["request_id"]],
        }
        assert first["request_id"]

    async def test_auditlogs_records_what_is_sent(
        self, serve_with: ServeFactory, mongo_url: str, db_name: str
    ) -> None:
        device_id = str(uuid.uuid4())
        async with live_auditlogs(mongo_url, f"{db_name}_audit") as auditlogs:
            async with (
                serve_with(auditlogs_addr=auditlogs.url) as running,
                running.device(device_id, "t1"),
                user_ws(running, device_id, tenant="t1") as ws,
            ):
                sid = await start_shell(ws)
                await ws.send(encode(Frame(SHELL, "stop")))
                await next_frame(ws, "stop")
                events = await auditlogs.wait_for(2, "t1")
        assert [e["action"] for e in events] == ["open_terminal", "close_terminal"]
        for event in events:
            assert event["actor"] == {"id": "user-1", "type": "user"}
            assert event["object"] == {"id": device_id, "type": "device"}
            assert event["meta"]["session_id"] == [sid]


class TestCommands:
    @pytest.mark.parametrize("command", ["check-update", "send-inventory"])
    async def test_management(self, dc: Running, command: str) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id) as device:
            headers = {"Authorization": f"Bearer {user_token('u9')}"}
            response = await dc.client.post(
                f"{MGMT}/devices/{device_id}/{command}", headers=headers
            )
            assert response.status_code == 202
            await eventually(lambda: len(device.commands) == 1)
            frame = device.commands[0]
            assert (frame.proto, frame.typ, frame.props) == (
                MENDER_CLIENT,
                command,
                {"user_id": "u9"},
            )

    async def test_internal(self, dc: Running) -> None:
        device_id = str(uuid.uuid4())
        async with dc.device(device_id, "t1") as device:
            url = f"{INTERNAL}/tenants/t1/devices/{device_id}/check-update"
            response = await dc.client.post(url)
            assert response.status_code == 202
            await eventually(lambda: len(device.commands) == 1)
            assert device.commands[0].props == {}

    async def test_not_connected(self, dc: Running) -> None:
        headers = {"Authorization": f"Bearer {user_token()}"}
        response = await dc.client.post(
            f"{MGMT}/devices/{uuid.uuid4()}/check-update", headers=headers
        )
        assert_error(response, 404, "device not connected")
        response = await dc.client.post(f"{INTERNAL}/tenants//devices/x/send-inventory")
        assert_error(response, 404, "device not connected")


async def _ended(mongo: AsyncMongoClient[Document], db_name: str, sid: str) -> bool:
    doc = await mongo[db_name]["sessions"].find_one({"_id": sid})
    return doc is not None and doc.get("end_ts") is not None


async def _until_closed(ws: ClientConnection) -> AsyncIterator[bytes]:
    try:
        while True:
            data = await ws.recv()
            assert isinstance(data, bytes)
            yield data
    except ConnectionClosed:
        return
