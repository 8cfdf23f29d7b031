"""A device and a user speaking deviceconnect's websocket protocol, for the API tests.

`FakeDevice` answers like mender-connect: the control handshake, a shell that echoes what
it is sent, file transfers against an in-memory file system, port forwarding that echoes,
and the Mender client commands (which it records).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.deviceconnect.app.protocol import (
    CONTROL,
    FILE_TRANSFER,
    MENDER_CLIENT,
    PORT_FORWARD,
    SHELL,
    Frame,
    decode,
    encode,
    pack_body,
)

__all__ = ["FakeDevice", "device_token", "open_ws", "user_token"]

_GO_REGULAR_0644 = 0o644


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _token(claims: dict[str, Any]) -> str:
    return f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"


def device_token(device_id: str, tenant: str = "") -> str:
    """A device's token as the gateway forwards it (services decode claims only)."""
    claims: dict[str, Any] = {"sub": device_id, "mender.device": True}
    if tenant:
        claims["mender.tenant"] = tenant
    return _token(claims)


def user_token(user_id: str = "user-1", tenant: str = "") -> str:
    """A user's token as the gateway forwards it."""
    claims: dict[str, Any] = {"sub": user_id, "mender.user": True}
    if tenant:
        claims["mender.tenant"] = tenant
    return _token(claims)


@contextlib.asynccontextmanager
async def open_ws(url: str, token: str | None, **options: Any) -> AsyncIterator[ClientConnection]:
    """A websocket to `url` with the token as bearer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    options.setdefault("max_size", 16 * 1024 * 1024)
    async with connect(url, additional_headers=headers, **options) as ws:
        yield ws


@dataclass
class FakeDevice:
    """A device's websocket with mender-connect's answers."""

    ws: ClientConnection
    files: dict[str, bytes] = field(default_factory=dict)
    commands: list[Frame] = field(default_factory=list)
    received: list[Frame] = field(default_factory=list)
    answer: bool = True
    _task: asyncio.Task[None] | None = None
    _uploads: dict[str, tuple[str, bytearray]] = field(default_factory=dict)

    def start(self) -> None:
        """Start answering."""
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        """Stop answering."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def send(self, frame: Frame) -> None:
        """Send a frame to the server."""
        await self.ws.send(encode(frame))

    async def _serve(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                assert isinstance(data, bytes)
                frame = decode(data)
                self.received.append(frame)
                if self.answer:
                    await self._answer(frame)

    async def _answer(self, frame: Frame) -> None:
        sid = frame.sid
        if frame.proto == CONTROL and frame.typ == "open":
            body = pack_body({"version": 1, "protocols": [SHELL, FILE_TRANSFER, PORT_FORWARD]})
            await self.send(Frame(CONTROL, "accept", sid, body=body))
        elif frame.proto == SHELL and frame.typ == "new":
            await self.send(Frame(SHELL, "new", sid, {"status": 1}, b"Shell started"))
        elif frame.proto == SHELL and frame.typ == "shell":
            await self.send(Frame(SHELL, "shell", sid, {"status": 1}, b"echo:" + frame.body))
        elif frame.proto == SHELL and frame.typ == "stop":
            await self.send(Frame(SHELL, "stop", sid, {"status": 1}))
        elif frame.proto == PORT_FORWARD and frame.typ in ("new", "forward"):
            await self.send(Frame(PORT_FORWARD, frame.typ, sid, frame.props, frame.body))
        elif frame.proto == MENDER_CLIENT:
            self.commands.append(frame)
            await self.send(Frame(MENDER_CLIENT, frame.typ, sid, {"status": 1}))
        elif frame.proto == FILE_TRANSFER:
            await self._file_transfer(frame)

    async def _file_transfer(self, frame: Frame) -> None:
        sid = frame.sid
        if frame.typ in ("stat", "get_file"):
            path = msgpack.unpackb(frame.body)["path"]
            if path not in self.files:
                err = f"failed to get file info from path '{path}': no such file or directory"
                body = pack_body({"err": err, "msgtype": frame.typ})
                await self.send(Frame(FILE_TRANSFER, "error", sid, body=body))
                return
            data = self.files[path]
            if frame.typ == "stat":
                info = {"path": path, "size": len(data), "mode": _GO_REGULAR_0644, "uid": 0}
                info["gid"] = 0
                await self.send(Frame(FILE_TRANSFER, "file_info", sid, body=pack_body(info)))
                return
            for offset in range(0, len(data), 4096):
                chunk = data[offset : offset + 4096]
                await self.send(Frame(FILE_TRANSFER, "file_chunk", sid, {"offset": offset}, chunk))
            await self.send(Frame(FILE_TRANSFER, "file_chunk", sid, {"offset": len(data)}))
        elif frame.typ == "put_file":
            path = msgpack.unpackb(frame.body)["path"]
            self._uploads[sid] = (path, bytearray())
            await self.send(Frame(FILE_TRANSFER, "ack", sid, {"offset": 0}))
        elif frame.typ == "file_chunk" and sid in self._uploads:
            path, received = self._uploads[sid]
            received += frame.body
            await self.send(Frame(FILE_TRANSFER, "ack", sid, dict(frame.props)))
            if not frame.body:
                self.files[path] = bytes(received)
                del self._uploads[sid]
