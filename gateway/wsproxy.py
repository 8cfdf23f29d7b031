"""The websocket proxy hop (deviceconnect): relays frames and close codes both ways.

The client's handshake is answered only after the upstream accepted its own, so an upstream
refusal (401, 404, ...) reaches the client as that HTTP status; frames then flow in both
directions unchanged (text stays text, binary stays binary) until either side closes, and the
close code is passed on to the other side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from common.core.requestid import request_id_var
from gateway._types import Receive, Scope, Send
from gateway.headers import HOP_BY_HOP, REQUEST_ID
from gateway.responses import error_body, send_ws_denial

__all__ = ["WsLimits", "deny_websocket", "proxy_websocket"]

_log = logging.getLogger("gateway.ws")

_JSON: Final = (b"content-type", b"application/json; charset=utf-8")
# Close codes that describe a closure but may not be sent in a close frame (RFC 6455 §7.4).
_NO_STATUS: Final = 1005
_ABNORMAL: Final = frozenset({1006, 1015})
_NOT_RELAYED: Final = HOP_BY_HOP | {REQUEST_ID, b"content-length", b"date", b"server"}


class WsLimits:
    """Timeouts and sizes of the upstream websocket connections."""

    __slots__ = ("handshake_timeout", "max_size")

    def __init__(self, *, handshake_timeout: float, max_size: int) -> None:
        self.handshake_timeout = handshake_timeout
        self.max_size = max_size


def _sendable(code: int | None) -> int:
    if code is None or code == _NO_STATUS:
        return 1000
    if code in _ABNORMAL or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        return 1011
    return code


async def deny_websocket(
    scope: Scope,
    send: Send,
    status: int,
    request_id: str,
    *,
    message: str = "",
    body: bytes | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Refuse a handshake with an HTTP answer, or a plain close where that is unsupported.

    Without `body`, the answer is the gateway's error body for `message` plus `headers`;
    with it, `body` and `headers` are relayed as they are (a verifier's or upstream's).
    """
    if "websocket.http.response" in scope.get("extensions", {}):
        if body is None:
            body = error_body(message, request_id)
            headers = (_JSON, *headers)
        await send_ws_denial(send, status, body, request_id, headers)
    else:
        await send({"type": "websocket.close", "code": 1008})


async def proxy_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    url: str,
    headers: list[tuple[str, str]],
    request_id: str,
    upstream_name: str,
    limits: WsLimits,
) -> None:
    """Connect to the upstream, accept the client, then relay until one side closes."""
    offered = [Subprotocol(p) for p in scope.get("subprotocols") or ()]
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=offered or None,
            compression=None,
            user_agent_header=None,
            proxy=None,
            open_timeout=limits.handshake_timeout,
            max_size=limits.max_size,
        )
    except InvalidStatus as exc:
        response = exc.response
        relayed = tuple(
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.raw_items()
            if k.lower().encode("latin-1") not in _NOT_RELAYED
        )
        await deny_websocket(
            scope,
            send,
            response.status_code,
            request_id,
            body=bytes(response.body),
            headers=relayed,
        )
        return
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        request_id_var.set(request_id)
        _log.warning("websocket %s: %s unreachable: %s", scope["path"], upstream_name, exc)
        await deny_websocket(
            scope, send, 502, request_id, message=f"{upstream_name} is unreachable"
        )
        return
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(upstream.close)
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": upstream.subprotocol,
                "headers": [(REQUEST_ID, request_id.encode("latin-1"))],
            }
        )
        await _relay(receive, send, upstream)


async def _client_to_upstream(receive: Receive, upstream: ClientConnection) -> tuple[int, str]:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            data = message.get("bytes")
            if data is not None:
                await upstream.send(data)
            else:
                await upstream.send(message.get("text") or "")
        elif kind == "websocket.disconnect":
            return int(message.get("code", 1000)), str(message.get("reason") or "")


async def _upstream_to_client(send: Send, upstream: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in upstream:
            if isinstance(message, bytes):
                await send({"type": "websocket.send", "bytes": message})
            else:
                await send({"type": "websocket.send", "text": message})


async def _relay(receive: Receive, send: Send, upstream: ClientConnection) -> None:
    inbound = asyncio.ensure_future(_client_to_upstream(receive, upstream))
    outbound = asyncio.ensure_future(_upstream_to_client(send, upstream))
    try:
        await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
        if inbound.done() and not inbound.cancelled() and inbound.exception() is None:
            # The client left: tell the upstream with the client's close code.
            code, reason = inbound.result()
            outbound.cancel()
            await upstream.close(code=_sendable(code), reason=reason)
            return
        # The upstream closed (or failed): pass its close code on to the client.
        if not outbound.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(outbound), timeout=1.0)
        inbound.cancel()
        closed_with = _sendable(upstream.close_code)
        reason = upstream.close_reason or ""
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": closed_with, "reason": reason})
    finally:
        for task in (inbound, outbound):
            if not task.done():
                task.cancel()
        for task in (inbound, outbound):
            # Either side may already be gone; the relay is over, so those errors are moot.
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, OSError, RuntimeError
            ):
                await task
