"""File transfers: the HTTP upload and download routes bridged to mender-connect's protocol.

Each transfer is a session of its own: a control handshake (`open` → `accept` listing the
file-transfer protocol), then `stat` + `get_file` (download) or `put_file` (upload), and
4 KiB `file_chunk`s (mender-connect reads at most 8 KiB per websocket message) acknowledged
by offset within a sliding window, so at most a window of data is in flight and nothing is
held whole in memory. Every wait for the device is bounded by the transfer timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from common.core.errors import BadRequest, ServiceError
from services.deviceconnect.app.connections import Connections
from services.deviceconnect.app.errors import (
    DeviceNotConnected,
    FileTooLarge,
    FileTransferDisabled,
    FileTransferFailed,
    FileTransferTimeout,
    TransferDeviceGone,
)
from services.deviceconnect.app.hub import Channel, ChannelClosed
from services.deviceconnect.app.protocol import (
    CONTROL,
    FILE_TRANSFER,
    Frame,
    MalformedFrame,
    decode,
    encode,
    pack_body,
    unpack_body,
)
from services.deviceconnect.clients.auditlogs import audit_event
from services.deviceconnect.store import DataStore

__all__ = ["CHUNK_SIZE", "Download", "FileInfo", "FileTransferApp", "check_path"]

CHUNK_SIZE: Final = 4096
# Chunks the device may be ahead of the last acknowledgement (both directions, as Mender).
_WINDOW_CHUNKS: Final = 20
_ACK_EVERY: Final = 10
# Go's os.FileMode type bits (mender-connect sends Go file modes, not POSIX ones).
_GO_MODE_TYPE: Final = 0x8F280000
_GO_MODE_PERM: Final = 0o777


def check_path(path: str | None) -> str:
    """The device path of a transfer: absolute, no `..` segment, no NUL byte (400 otherwise)."""
    if not path:
        raise BadRequest("path: cannot be blank")
    if "\x00" in path:
        raise BadRequest("path: must not contain NUL bytes")
    if not path.startswith("/"):
        raise BadRequest("path: must be absolute")
    if ".." in path.split("/"):
        raise BadRequest("path: must not contain '..' segments")
    return path


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the device reported about a file."""

    path: str
    size: int
    mode: int
    uid: int | None
    gid: int | None

    def headers(self) -> dict[str, str]:
        """The download's `X-MEN-File-*` headers (mode in octal)."""
        headers = {
            "Content-Disposition": f'attachment; filename="{posixpath.basename(self.path)}"',
            "X-MEN-File-Path": self.path,
            "X-MEN-File-Mode": format(self.mode, "o"),
            "X-MEN-File-Size": str(self.size),
        }
        if self.uid is not None:
            headers["X-MEN-File-UID"] = str(self.uid)
        if self.gid is not None:
            headers["X-MEN-File-GID"] = str(self.gid)
        return headers


@dataclass(frozen=True, slots=True)
class Download:
    """A download in progress: the file's description and its content as it arrives."""

    info: FileInfo
    chunks: AsyncIterator[bytes]


class _Transfer:
    """One file-transfer session with a device."""

    def __init__(self, channel: Channel, sid: str, user_id: str, timeout: float) -> None:
        self.channel = channel
        self.sid = sid
        self.user_id = user_id
        self.timeout = timeout

    async def send(self, typ: str, body: bytes = b"", **props: Any) -> None:
        frame = Frame(FILE_TRANSFER, typ, self.sid, {"user_id": self.user_id, **props}, body)
        try:
            await self.channel.send(encode(frame))
        except ChannelClosed:
            raise TransferDeviceGone() from None

    async def receive(self) -> Frame:
        """The device's next file-transfer frame; control pings are answered on the way."""
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    data = await self.channel.recv()
            except TimeoutError:
                raise FileTransferTimeout() from None
            if data is None:
                raise TransferDeviceGone()
            try:
                frame = decode(data)
            except MalformedFrame as exc:
                raise FileTransferFailed(f"malformed message from the device: {exc}") from None
            if frame.proto == CONTROL and frame.typ == "ping":
                with contextlib.suppress(ChannelClosed):
                    await self.channel.send(encode(Frame(CONTROL, "pong", self.sid)))
                continue
            return frame

    async def handshake(self) -> None:
        """Open the session; the device must accept the file-transfer protocol."""
        try:
            await self.channel.send(
                encode(Frame(CONTROL, "open", self.sid, body=pack_body({"versions": [1]})))
            )
        except ChannelClosed:
            raise TransferDeviceGone() from None
        frame = await self.receive()
        if frame.typ == "error":
            raise FileTransferFailed(f"handshake error from the device: {_error_text(frame)}")
        if frame.proto != CONTROL or frame.typ != "accept":
            raise FileTransferDisabled("file transfer not implemented on device")
        try:
            protocols = unpack_body(frame.body).get("protocols") or []
        except MalformedFrame:
            protocols = []
        if FILE_TRANSFER not in protocols:
            raise FileTransferDisabled()

    async def close(self) -> None:
        """Tell the device the session is over and leave it."""
        with contextlib.suppress(ChannelClosed):
            await self.channel.send(encode(Frame(CONTROL, "close", self.sid)))
        await self.channel.close()


def _error_text(frame: Frame) -> str:
    try:
        body = unpack_body(frame.body)
    except MalformedFrame:
        return frame.body.decode(errors="replace")
    return str(body.get("err") or body.get("error") or "unknown error")


def _offset(frame: Frame) -> int:
    offset = frame.props.get("offset")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise FileTransferFailed("the device sent a message without a valid offset")
    return offset


class FileTransferApp:
    """Downloads from and uploads to devices, with an audit event for each."""

    def __init__(
        self,
        store: DataStore,
        connections: Connections,
        *,
        max_file_size: int,
        timeout: float,
        clock: Callable[[], datetime],
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._connections = connections
        self.max_file_size = max_file_size
        self._timeout = timeout
        self._clock = clock
        self._notify = notify

    async def _open(self, tenant_id: str, user_id: str, device_id: str) -> _Transfer:
        sid = str(uuid.uuid4())
        try:
            channel = await self._connections.open(tenant_id, device_id, sid)
        except DeviceNotConnected:
            raise TransferDeviceGone() from None
        transfer = _Transfer(channel, sid, user_id, self._timeout)
        try:
            await transfer.handshake()
        except BaseException:
            await transfer.close()
            raise
        return transfer

    async def _audit(
        self, tenant_id: str, transfer: _Transfer, device_id: str, action: str, path: str
    ) -> None:
        await self._store.add_effects(
            [
                audit_event(
                    tenant_id,
                    action=action,
                    user_id=transfer.user_id,
                    device_id=device_id,
                    session_id=transfer.sid,
                    when=self._clock(),
                    details={"path": [path]},
                )
            ]
        )
        self._notify()

    async def download(self, tenant_id: str, user_id: str, device_id: str, path: str) -> Download:
        """Start downloading a regular file; the content streams as the caller reads it."""
        transfer = await self._open(tenant_id, user_id, device_id)
        try:
            info = await self._stat(transfer, path)
            await transfer.send("get_file", pack_body({"path": path}))
            await self._audit(tenant_id, transfer, device_id, "download_file", path)
        except BaseException:
            await transfer.close()
            raise
        return Download(info=info, chunks=self._receive_file(transfer, info))

    async def _stat(self, transfer: _Transfer, path: str) -> FileInfo:
        await transfer.send("stat", pack_body({"path": path}))
        frame = await transfer.receive()
        if frame.typ == "error":
            raise FileTransferFailed(
                f"failed to retrieve file info: error received from device: {_error_text(frame)}"
            )
        if frame.proto != FILE_TRANSFER or frame.typ != "file_info":
            raise FileTransferFailed(f"unexpected response from the device: {frame.typ!r}")
        try:
            body = unpack_body(frame.body)
        except MalformedFrame as exc:
            raise FileTransferFailed(str(exc)) from None
        mode, size = body.get("mode"), body.get("size")
        if not isinstance(mode, int) or not isinstance(size, int):
            raise FileTransferFailed("the device sent incomplete file information")
        if mode & _GO_MODE_TYPE:
            raise FileTransferFailed("path is not a regular file")
        if size > self.max_file_size:
            raise FileTransferFailed(f"the file exceeds the limit of {self.max_file_size} bytes")
        uid, gid = body.get("uid"), body.get("gid")
        return FileInfo(
            path=str(body.get("path") or path),
            size=size,
            mode=mode & _GO_MODE_PERM,
            uid=uid if isinstance(uid, int) else None,
            gid=gid if isinstance(gid, int) else None,
        )

    async def _receive_file(self, transfer: _Transfer, info: FileInfo) -> AsyncIterator[bytes]:
        offset = 0
        unacked = 0
        try:
            while True:
                frame = await transfer.receive()
                if frame.typ == "error":
                    raise FileTransferFailed(_error_text(frame))
                if frame.typ != "file_chunk":
                    continue
                if not frame.body:
                    await transfer.send("ack", offset=offset)
                    return
                if _offset(frame) != offset:
                    raise FileTransferFailed("wrong offset received")
                offset += len(frame.body)
                if offset > max(info.size, self.max_file_size):
                    raise FileTransferFailed("the file grew beyond its announced size")
                yield frame.body
                unacked += 1
                if unacked >= _ACK_EVERY:
                    unacked = 0
                    await transfer.send("ack", offset=offset)
        finally:
            await transfer.close()

    async def upload(
        self,
        tenant_id: str,
        user_id: str,
        device_id: str,
        *,
        request: dict[str, Any],
        content: AsyncIterator[bytes],
    ) -> None:
        """Write a file on the device from `content`, streamed in acknowledged chunks."""
        path = request["path"]
        transfer = await self._open(tenant_id, user_id, device_id)
        try:
            await transfer.send("put_file", pack_body(request))
            frame = await transfer.receive()
            if frame.typ == "error":
                raise FileTransferFailed(_error_text(frame))
            if frame.typ != "ack":
                raise FileTransferFailed(f"unexpected response from the device: {frame.typ!r}")
            await self._send_file(transfer, content)
            await self._audit(tenant_id, transfer, device_id, "upload_file", path)
        finally:
            await transfer.close()

    async def _send_file(self, transfer: _Transfer, content: AsyncIterator[bytes]) -> None:
        acked = asyncio.Event()
        state = {"acked": 0}
        window = _WINDOW_CHUNKS * CHUNK_SIZE

        async def acknowledgements() -> None:
            while True:
                frame = await transfer.receive()
                if frame.typ == "error":
                    raise FileTransferFailed(_error_text(frame))
                if frame.typ == "ack":
                    state["acked"] = max(state["acked"], _offset(frame))
                    acked.set()

        async def wait_until(offset: int) -> None:
            while state["acked"] < offset:
                acked.clear()
                async with asyncio.timeout(self._timeout):
                    await _first(acked.wait(), reader)

        reader = asyncio.create_task(acknowledgements())
        try:
            offset = 0
            pending = bytearray()
            async for data in content:
                pending += data
                while len(pending) >= CHUNK_SIZE:
                    offset = await self._chunk(transfer, pending, offset)
                    if offset > self.max_file_size:
                        await transfer.send("error", pack_body({"err": "file too large"}))
                        raise FileTooLarge(self.max_file_size)
                    if offset > state["acked"] + window:
                        await wait_until(offset - window)
            while pending:
                offset = await self._chunk(transfer, pending, offset)
            if offset > self.max_file_size:
                await transfer.send("error", pack_body({"err": "file too large"}))
                raise FileTooLarge(self.max_file_size)
            await transfer.send("file_chunk", offset=offset)
            await wait_until(offset)
        except TimeoutError:
            raise FileTransferTimeout() from None
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServiceError):
                await reader

    @staticmethod
    async def _chunk(transfer: _Transfer, pending: bytearray, offset: int) -> int:
        chunk = bytes(pending[:CHUNK_SIZE])
        del pending[:CHUNK_SIZE]
        await transfer.send("file_chunk", chunk, offset=offset)
        return offset + len(chunk)


async def _first(waiting: Any, reader: asyncio.Task[None]) -> None:
    """Wait for `waiting`; if the acknowledgement reader fails first, raise its error."""
    waiter = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not waiter.done():
            waiter.cancel()
    if reader.done():
        reader.result()
