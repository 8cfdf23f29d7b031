"""Device API: the device's websocket (`/api/devices/v1/deviceconnect/connect`)."""

from __future__ import annotations

import logging
from typing import Final

from fastapi import APIRouter, Response, WebSocket

from common.web.identity import device_caller
from services.deviceconnect.api.deps import ConnectionsDep
from services.deviceconnect.api.websocket import (
    WebSocketAdapter,
    accept,
    incoming,
    not_a_websocket,
    refuse,
)
from services.deviceconnect.app.protocol import MalformedFrame, decode
from services.deviceconnect.app.sessions import CLOSE_UNSUPPORTED

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/devices/v1/deviceconnect"

router = APIRouter(prefix=PREFIX, tags=["devices"])
_log = logging.getLogger("deviceconnect.devices")


@router.get("/connect", status_code=101)
async def connect_http() -> Response:
    """Connect the device (a websocket: a plain HTTP request is refused with 400)."""
    raise not_a_websocket()


@router.websocket("/connect")
async def connect(websocket: WebSocket, connections: ConnectionsDep) -> None:
    """The device's websocket: sessions of users reach the device over it."""
    try:
        identity = device_caller(websocket)
        socket = WebSocketAdapter(websocket)
        link = await connections.connect(identity.tenant, identity.subject, socket)
    except Exception as exc:  # refused as an HTTP route would answer it; unknown: re-raised
        await refuse(websocket, exc)
        return
    try:
        await accept(websocket)
        async for data in incoming(websocket):
            try:
                frame = decode(data)
            except MalformedFrame as exc:
                _log.warning("device %s sent a malformed message: %s", link.device_id, exc)
                await socket.close(CLOSE_UNSUPPORTED, "malformed message")
                break
            await link.route(frame.sid, data)
    finally:
        await connections.disconnected(link)
