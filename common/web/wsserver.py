"""uvicorn's websocket protocol with one fix: a handshake refused with an HTTP answer is done.

uvicorn (0.54) treats a websocket request that the app refuses with an HTTP response (the
ASGI denial-response extension: 401, 404, 503 ...) as never completed and logs "ASGI callable
returned without completing handshake" as an error, next to its access line. A refusal is a
normal answer: this protocol marks the handshake complete once the refusal is sent, so each
refused handshake leaves just the access line.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["WebSocketProtocol"]


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """The `websockets` sans-I/O protocol of uvicorn, quiet about refused handshakes."""

    async def send(self, message: Any) -> None:
        """Send an ASGI message; a finished refusal completes the handshake."""
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True
