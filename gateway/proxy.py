"""The HTTP proxy hop: one request to an upstream over the shared aiohttp session.

Request and response bodies stream in both directions with bounded buffers (the ASGI server
and aiohttp both pause reading while their buffer is full), so a multi-GB artifact upload or
download costs the gateway a few hundred KB. `Content-Length`, `Range`, `Content-Range` and
`Accept-Ranges` pass through untouched; a chunked request body stays chunked upstream;
compressed bodies are relayed as they are.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import hdrs
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict, istr
from yarl import URL

from common.core.requestid import request_id_var
from common.core.revocations import REVOCATIONS_HEADER
from gateway._types import Receive, Scope, Send
from gateway.headers import HOP_BY_HOP, REQUEST_ID
from gateway.responses import send_error

__all__ = ["RelayRequest", "UpstreamBroken", "proxy_http", "upstream_url"]

_log = logging.getLogger("gateway.proxy")

# Responses up to this size are read whole before answering, so an upstream failure while
# reading them can still become a 502; larger ones are streamed.
_SMALL_BODY: Final = 64 * 1024
_NO_BODY_STATUSES: Final = frozenset({204, 304})
# The upstream URLs of the last few thousand request targets are parsed once: a device's
# polls and reports go to the same few.
_REMEMBERED_URLS: Final = 4096
# The revocation sequence number is between the issuer and the gateway (see `gateway.app`).
_RESPONSE_DROP: Final = HOP_BY_HOP | {REQUEST_ID, REVOCATIONS_HEADER.lower().encode()}
BeforeResponse = Callable[[str, Mapping[str, str]], Awaitable[None]]
_UPSTREAM_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)


def _log_failure(request_id: str, message: str, *args: object) -> None:
    # Each request runs in its own task (its own context), so the id stays with it.
    request_id_var.set(request_id)
    _log.warning(message, *args)


class RelayRequest(aiohttp.ClientRequest):
    """An aiohttp request that carries exactly the headers it is given.

    aiohttp would add `Accept`, `Accept-Encoding`, `User-Agent` and a default
    `Content-Type` when the client sent none; a proxy must not. Doing it here once, rather
    than with a per-request `skip_auto_headers`, saves rebuilding that set on every request.
    """

    DEFAULT_HEADERS: dict[istr, str] = {}  # noqa: RUF012 (read-only, replaces the base's)
    _skip_auto_headers = CIMultiDict({hdrs.CONTENT_TYPE: None})

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        """Add nothing: the relayed request keeps the client's headers as they were."""

    def update_headers(self, headers: LooseHeaders | None) -> None:
        """Take the headers as aiohttp would (`Host` first, the client's replacing the
        upstream's), copied at once rather than one by one."""
        relayed: CIMultiDict[str] = CIMultiDict(headers or ())
        if len(relayed.getall(hdrs.HOST, ())) > 1:
            super().update_headers(relayed)
            return
        host = self.url.host_port_subcomponent
        assert host is not None  # an absolute URL
        self.headers = CIMultiDict(((hdrs.HOST, host),))
        self.headers.update(relayed)


class UpstreamBroken(Exception):
    """The upstream failed after the response started: the client connection is aborted."""


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


@dataclass(slots=True)
class _Exchange:
    body_done: bool = False
    client_gone: bool = False
    response_done: bool = False


async def _stream_body(first: bytes, receive: Receive, state: _Exchange) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Ending the generator normally would complete a truncated chunked body
            # upstream; failing it aborts the upstream request instead.
            state.client_gone = True
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            state.body_done = True
            if chunk:
                yield chunk
            return
        if chunk:
            yield chunk


@functools.lru_cache(maxsize=_REMEMBERED_URLS)
def upstream_url(base: str, target: str) -> URL:
    """The upstream URL of a request target (`request_target`: path and query as sent)."""
    return URL(f"{base}{target}", encoded=True)


async def proxy_http(
    session: aiohttp.ClientSession,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    url: URL,
    headers: list[tuple[str, str]],
    has_body: bool,
    request_id: str,
    upstream_name: str,
    before_response: BeforeResponse | None = None,
) -> int:
    """Relay one request and its response; return the upstream status (0 if none).

    `before_response(upstream_name, headers)` runs once the upstream's headers are in,
    before anything is sent to the client.
    """
    state = _Exchange()
    data: bytes | AsyncIterator[bytes] | None = None
    if has_body:
        first = await receive()
        if first["type"] == "http.disconnect":
            return 0
        if first.get("more_body", False):
            data = _stream_body(first.get("body", b""), receive, state)
        else:
            data = first.get("body", b"")
            state.body_done = True
    else:
        state.body_done = True
    method: str = scope["method"]
    try:
        resp = await session.request(method, url, headers=headers, data=data)
    except (*_UPSTREAM_ERRORS, _ClientGone) as exc:
        if state.client_gone:
            return 0
        _log_failure(
            request_id, "%s %s: %s unreachable: %s", method, scope["path"], upstream_name, exc
        )
        await send_error(send, 502, f"{upstream_name} is unreachable", request_id)
        return 0
    try:
        if before_response is not None:
            await before_response(upstream_name, resp.headers)
        status = resp.status
        out = _response_headers(resp.raw_headers)
        out.append((REQUEST_ID, request_id.encode("latin-1")))
        length = resp.content_length
        if (
            method == "HEAD"
            or status in _NO_BODY_STATUSES
            or (length is not None and length <= _SMALL_BODY)
        ):
            try:
                body = await resp.read()
            except _UPSTREAM_ERRORS as exc:
                _log_failure(
                    request_id, "%s %s: %s broke off: %s", method, scope["path"], upstream_name, exc
                )
                await send_error(send, 502, f"{upstream_name} is unreachable", request_id)
                return 0
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})
            return status
        await send({"type": "http.response.start", "status": status, "headers": out})
        await _stream_response(resp, receive, send, state)
        return status
    finally:
        resp.release()


async def _disconnected(receive: Receive) -> None:
    # An empty final body event may still be pending when no body was read; skip it.
    while (await receive())["type"] != "http.disconnect":
        pass


def _response_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] = set()
    for key, value in raw:
        name = key.lower()
        if name in _RESPONSE_DROP:
            if name == b"connection":
                named.update(t.strip() for t in value.lower().split(b","))
            continue
        out.append((key, value))
    if named:
        # Headers the upstream declared connection-specific end at this hop too.
        out = [(k, v) for k, v in out if k.lower() not in named]
    return out


async def _stream_response(
    resp: aiohttp.ClientResponse, receive: Receive, send: Send, state: _Exchange
) -> None:
    watcher: asyncio.Future[None] | None = None
    if state.body_done:
        # Once the request body is read, the next ASGI event is the client going away:
        # stop pulling the upstream body then instead of draining it for nobody.
        def client_event(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and not state.response_done:
                state.client_gone = True
                resp.close()

        watcher = asyncio.ensure_future(_disconnected(receive))
        watcher.add_done_callback(client_event)
    try:
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        state.response_done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except _UPSTREAM_ERRORS as exc:
        if state.client_gone:
            return
        raise UpstreamBroken(f"upstream body broke off: {exc!r}") from exc
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
