"""Request ids: read or created per request, kept in a contextvar, echoed on responses."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "current_request_id", "request_id_var"]

REQUEST_ID_HEADER: Final = "X-MEN-RequestID"
_HEADER_KEY: Final = REQUEST_ID_HEADER.lower().encode()
_MAX_LEN: Final = 128

request_id_var: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    """Return the id of the request being handled, or an empty string outside one."""
    return request_id_var.get()


def _incoming_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == _HEADER_KEY:
            text: str = value.decode("latin-1").strip()
            if text and len(text) <= _MAX_LEN and text.isprintable():
                return text
    return str(uuid.uuid4())


class RequestIdMiddleware:
    """Pure ASGI middleware: sets the request id contextvar and echoes the header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope)
        token = request_id_var.set(rid)
        raw = rid.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER_KEY]
                headers.append((_HEADER_KEY, raw))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
