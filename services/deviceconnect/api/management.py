"""Management API (`/api/management/v1/deviceconnect`): what users and the web UI call."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse

from common.core.errors import BadRequest
from common.web.identity import UserIdentity, user_caller
from common.web.multipart import MultipartStream
from services.deviceconnect.api.deps import (
    DevicesAppDep,
    FileTransferAppDep,
    PlaybackAppDep,
    SessionsAppDep,
)
from services.deviceconnect.api.schemas import ConnectionState
from services.deviceconnect.api.websocket import (
    WebSocketAdapter,
    accept,
    deny,
    incoming,
    not_a_websocket,
    refuse,
)
from services.deviceconnect.app.errors import DeviceNotConnected
from services.deviceconnect.app.filetransfer import check_path
from services.deviceconnect.app.hub import CLOSE_NORMAL

__all__ = ["PREFIX", "UPLOAD_PATH", "router"]

PREFIX: Final = "/api/management/v1/deviceconnect"
# Upload bodies are streamed to the device; the route enforces the file size limit itself.
UPLOAD_PATH: Final = PREFIX + "/devices/[^/]+/upload"

router = APIRouter(prefix=PREFIX, tags=["management"])

_DEVICE_GONE: Final = "failed to connect to device: device disconnected"


@router.get("/devices/{device_id}")
async def get_device(
    device_id: str, identity: UserIdentity, devices: DevicesAppDep
) -> ConnectionState:
    """The connection state of a device."""
    return ConnectionState.of(await devices.get(identity.tenant, device_id))


@router.get("/devices/{device_id}/connect", status_code=101)
async def connect_http() -> Response:
    """Open a session with a device (a websocket: a plain HTTP request is refused with 400)."""
    raise not_a_websocket()


@router.websocket("/devices/{device_id}/connect")
async def connect(websocket: WebSocket, device_id: str, sessions: SessionsAppDep) -> None:
    """A user's session with a device: terminal, port forwarding, file transfer frames."""
    try:
        identity = user_caller(websocket)
        active = await sessions.open(identity.tenant, identity.subject, device_id)
    except DeviceNotConnected:
        await deny(websocket, 404, _DEVICE_GONE)
        return
    except Exception as exc:  # refused as an HTTP route would answer it; unknown: re-raised
        await refuse(websocket, exc)
        return
    socket = WebSocketAdapter(websocket)
    try:
        await accept(websocket)
    except BaseException:
        await active.finish("user disconnected")
        raise
    ending = await sessions.serve(active, socket, incoming(websocket))
    if ending is not None:
        await socket.close(ending.code, ending.reason)


@router.post("/devices/{device_id}/check-update", status_code=202)
async def check_update(
    device_id: str, identity: UserIdentity, sessions: SessionsAppDep
) -> JSONResponse:
    """Have the device's Mender client check for an update now."""
    await sessions.command(identity.tenant, device_id, "check-update", user_id=identity.subject)
    return JSONResponse(None, status_code=202)


@router.post("/devices/{device_id}/send-inventory", status_code=202)
async def send_inventory(
    device_id: str, identity: UserIdentity, sessions: SessionsAppDep
) -> JSONResponse:
    """Have the device's Mender client send its inventory now."""
    await sessions.command(identity.tenant, device_id, "send-inventory", user_id=identity.subject)
    return JSONResponse(None, status_code=202)


@router.get("/devices/{device_id}/download", response_class=StreamingResponse)
async def download_file(
    device_id: str,
    identity: UserIdentity,
    transfers: FileTransferAppDep,
    path: Annotated[str | None, Query()] = None,
) -> StreamingResponse:
    """Download a regular file from the device, streamed as the device sends it."""
    download = await transfers.download(
        identity.tenant, identity.subject, device_id, check_path(path)
    )
    return StreamingResponse(
        download.chunks, media_type="application/octet-stream", headers=download.info.headers()
    )


def _int_field(fields: dict[str, str], name: str, *, base: int = 10) -> int | None:
    value = fields.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value, base)
    except ValueError:
        kind = "an octal" if base == 8 else "an"
        raise BadRequest(f"{name}: must be {kind} integer") from None
    if not 0 <= number < 2**32:
        raise BadRequest(f"{name}: out of range")
    return number


@router.put("/devices/{device_id}/upload", status_code=201)
async def upload_file(
    device_id: str, request: Request, identity: UserIdentity, transfers: FileTransferAppDep
) -> Response:
    """Upload a file to the device (multipart: path, uid, gid, mode, then file)."""
    form = MultipartStream(request)
    fields = await form.fields_until("file", missing="file: upload file is required")
    put: dict[str, Any] = {"path": check_path(fields.get("path")), "src_path": form.filename}
    for name, base in (("uid", 10), ("gid", 10), ("mode", 8)):
        number = _int_field(fields, name, base=base)
        if number is not None:
            put[name] = number
    await transfers.upload(
        identity.tenant, identity.subject, device_id, request=put, content=form.file_chunks()
    )
    return Response(status_code=201)


@router.get("/sessions/{session_id}/playback", status_code=101)
async def playback_http() -> Response:
    """Play back a recorded session (a websocket: a plain HTTP request is refused with 400)."""
    raise not_a_websocket()


def _sleep_ms(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("sleep_ms")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > 60_000:
        raise BadRequest("sleep_ms: must be an integer between 0 and 60000")
    return int(raw)


@router.websocket("/sessions/{session_id}/playback")
async def playback(websocket: WebSocket, session_id: str, player: PlaybackAppDep) -> None:
    """Replay a recorded terminal session at its original pace (or every `sleep_ms`)."""
    try:
        identity = user_caller(websocket)
        sleep_ms = _sleep_ms(websocket)
        await player.check(identity.tenant, session_id)
    except Exception as exc:  # refused as an HTTP route would answer it; unknown: re-raised
        await refuse(websocket, exc)
        return
    await accept(websocket)
    socket = WebSocketAdapter(websocket)

    async def play() -> None:
        async for frame in player.frames(identity.tenant, session_id, sleep_ms=sleep_ms):
            await socket.send(frame)

    async def watch() -> None:
        async for _ in incoming(websocket):
            pass

    tasks = [asyncio.create_task(play()), asyncio.create_task(watch())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if tasks[0] in done:
        await socket.close(CLOSE_NORMAL, "")
