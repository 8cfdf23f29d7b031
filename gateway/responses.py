"""Responses the gateway answers itself, always in Mender's error shape with the request id."""

from __future__ import annotations

import json
from collections.abc import Iterable

from gateway._types import Send

__all__ = ["error_body", "send_denial", "send_error", "send_ws_denial"]

_JSON: tuple[bytes, bytes] = (b"content-type", b"application/json; charset=utf-8")


def error_body(message: str, request_id: str) -> bytes:
    """Render `{"error": ..., "request_id": ...}`."""
    return json.dumps({"error": message, "request_id": request_id}, separators=(",", ":")).encode()


def _headers(
    request_id: str, length: int, extra: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-length", str(length).encode()), *extra]
    headers.append((b"x-men-requestid", request_id.encode("latin-1")))
    return headers


async def send_error(
    send: Send,
    status: int,
    message: str,
    request_id: str,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer an HTTP request with an error."""
    await send_denial(send, status, error_body(message, request_id), request_id, [_JSON, *extra])


async def send_denial(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    headers: Iterable[tuple[bytes, bytes]],
) -> None:
    """Answer an HTTP request with a given body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _headers(request_id, len(body), headers),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_ws_denial(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    headers: Iterable[tuple[bytes, bytes]] = (_JSON,),
) -> None:
    """Refuse a websocket handshake with an HTTP response (ASGI denial response)."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": _headers(request_id, len(body), headers),
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
