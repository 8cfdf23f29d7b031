"""Websocket plumbing shared by the device, user and playback routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from common.core.errors import BadRequest
from common.core.requestid import REQUEST_ID_HEADER, current_request_id
from common.web.app import error_response, websocket_refusal

__all__ = [
    "NOT_A_WEBSOCKET",
    "SUBPROTOCOL",
    "WebSocketAdapter",
    "accept",
    "deny",
    "incoming",
    "not_a_websocket",
    "refuse",
]

# Mender's websockets speak this subprotocol when the client asks for it.
SUBPROTOCOL: Final = "protomsg/msgpack"
_CLOSE_TIMEOUT: Final = 10.0
NOT_A_WEBSOCKET: Final = (
    "websocket: the client is not using the websocket protocol: "
    "'upgrade' token not found in 'Connection' header"
)


class WebSocketAdapter:
    """A Starlette websocket as the app layer's `FrameSocket`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def send(self, data: bytes) -> None:
        """Send one binary frame."""
        await self._ws.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        """Close unless already closed (a close racing the peer's is not an error)."""
        if self._ws.application_state is WebSocketState.DISCONNECTED:
            return
        # A peer that does not read blocks the close frame too: give up on it after a while.
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._ws.close(code, reason[:120])


async def deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the handshake with an HTTP error in Mender's shape."""
    response = error_response(status, message)
    response.headers[REQUEST_ID_HEADER] = current_request_id()
    await websocket.send_denial_response(response)


async def accept(websocket: WebSocket) -> None:
    """Complete the handshake, with Mender's subprotocol when the client offers it."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)


async def incoming(websocket: WebSocket) -> AsyncIterator[bytes]:
    """The peer's messages until it disconnects (text messages are passed on as bytes)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode()
        yield data


async def refuse(websocket: WebSocket, exc: Exception) -> None:
    """Refuse the handshake as an HTTP route would answer `exc`; re-raise what is unknown."""
    refusal = websocket_refusal(exc)
    if refusal is None:
        raise exc
    await deny(websocket, *refusal)


def not_a_websocket() -> BadRequest:
    """The error of a plain HTTP request to a websocket route."""
    return BadRequest(NOT_A_WEBSOCKET)
