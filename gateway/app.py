"""The gateway as a raw ASGI application: route, check the token, proxy.

It is deliberately not a FastAPI app: on the hot path every request is one route lookup,
one cache lookup and one proxied request over a pooled aiohttp session (see the measurement
table in ARCHITECTURE.md and `bench/gateway_bench.py`).

`GET /status` answers 204 while the process serves requests: the gateway's own liveness
check (internal paths are never routed, so services' health endpoints are not reachable
through it). With the web UI deployed (`ui_addr`), `/ui/...` is proxied to it without a
token check, as Mender's own gateway does, and `/` and `/ui` redirect to `/ui/` on the
scheme and host the client used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import aiohttp

from gateway._types import Message, Receive, Scope, Send
from gateway.auth import Denial, Grant, TokenGate, Verifier, VerifierUnavailable
from gateway.config import UPSTREAMS, Settings
from gateway.headers import (
    REQUEST_ID,
    Origin,
    RequestHeaders,
    TrustedProxies,
    bearer_token,
    cookie_token,
    forwarded_headers,
    origin,
    parse_request_headers,
    verification_headers,
)
from gateway.proxy import RelayRequest, proxy_http, upstream_url
from gateway.ratelimit import RateLimiter
from gateway.responses import send_denial, send_error
from gateway.routes import AuthMode, Route, RouteTable, device_revocation_key
from gateway.verifier import HttpVerifier
from gateway.wsproxy import WsLimits, deny_websocket, proxy_websocket

__all__ = ["STATUS_PATH", "UI_PREFIX", "Gateway"]

STATUS_PATH: Final = "/status"
UI_PREFIX: Final = "/ui/"
# Idle upstream connections are closed before uvicorn's default 5 s keep-alive would close
# them from the other end, so a request never lands on a connection being torn down.
_UPSTREAM_KEEPALIVE: Final = 2.0
_log = logging.getLogger("gateway")


class Gateway:
    """The ASGI callable: HTTP and websocket proxying behind token checks, plus lifespan."""

    def __init__(
        self,
        settings: Settings,
        *,
        routes: RouteTable | None = None,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.routes = routes or RouteTable()
        self._addrs: dict[str, str | None] = {u: settings.upstream_addr(u) for u in UPSTREAMS}
        self._trusted = TrustedProxies(settings.trusted_proxies)
        self._custom_verifier = verifier
        self._clock = clock
        self._wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None
        self._gate: TokenGate | None = None
        self._limiter = (
            RateLimiter(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
            if settings.rate_limit_per_second > 0
            else None
        )
        self._ws_limits = WsLimits(
            handshake_timeout=settings.connect_timeout + settings.verify_timeout,
            max_size=settings.ws_max_message_size,
        )

    @property
    def gate(self) -> TokenGate:
        """The token checker (exists once the gateway has started)."""
        if self._gate is None:
            raise RuntimeError("the gateway has not started")
        return self._gate

    async def startup(self) -> None:
        """Open the shared upstream session and build the token checker."""
        if self._session is not None:
            return
        settings = self.settings
        connector = aiohttp.TCPConnector(
            limit=settings.upstream_connection_limit,
            limit_per_host=0,
            keepalive_timeout=_UPSTREAM_KEEPALIVE,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.connect_timeout,
                sock_read=settings.read_timeout,
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=RelayRequest,
            trust_env=False,
            requote_redirect_url=False,
        )
        self._gate = TokenGate(
            self._custom_verifier or HttpVerifier(self._session, settings),
            ttl=settings.token_cache_ttl,
            max_size=settings.token_cache_size,
            horizon=settings.verify_timeout + settings.token_cache_ttl,
            clock=self._clock,
            wall_clock=self._wall_clock,
        )
        if settings.dev_mode:
            for route in self.routes:
                where = self._addrs[route.upstream] or "not deployed"
                _log.info("route %s -> %s (%s)", route.prefix, where, route.auth.value)

    async def shutdown(self) -> None:
        """Close the upstream session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: an HTTP request, a websocket, or the lifespan."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _rate_limited(self, client: Origin) -> int:
        if self._limiter is None:
            return 0
        return self._limiter.retry_after(client.client)

    async def _over_rate_limit(self, send: Send, client: Origin, request_id: str) -> bool:
        """Answer 429 to a client over its rate limit; whether it was."""
        wait = self._rate_limited(client)
        if wait:
            retry = [(b"retry-after", str(wait).encode())]
            await send_error(send, 429, "too many requests", request_id, retry)
        return bool(wait)

    async def _verify(
        self, scope: Scope, route: Route, token: str, forwarded: list[tuple[str, str]]
    ) -> Grant | Denial:
        """Ask the verifier about a token the cache does not know."""
        try:
            return await self.gate.check(route.auth, token, verification_headers(scope, forwarded))
        except VerifierUnavailable as exc:
            return Denial(exc.status, exc.message)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._session is None:
            await self.startup()
        assert self._session is not None
        path: str = scope["path"]
        req = parse_request_headers(scope)
        rid = req.request_id
        if path == STATUS_PATH:
            if scope["method"] in ("GET", "HEAD"):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 204,
                        "headers": [(REQUEST_ID, rid.encode("latin-1"))],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
            else:
                await send_error(send, 405, "method not allowed", rid, [(b"allow", b"GET, HEAD")])
            return
        client = origin(scope, req, self._trusted)
        ui = self.settings.ui_addr
        if ui is not None and _is_ui(path):
            await self._ui(scope, receive, send, req, client, ui)
            return
        route = self.routes.match(path)
        if route is None:
            await send_error(send, 404, "not found", rid)
            return
        base = self._addrs[route.upstream]
        if base is None:
            await send_error(send, 503, f"{route.upstream} is not available", rid)
            return
        if await self._over_rate_limit(send, client, rid):
            return
        forwarded = forwarded_headers(scope, client, rid)
        headers = req.forward
        token = ""
        if route.auth is not AuthMode.NONE:
            token, from_cookie = _credentials(route, req)
            grant = self.gate.cached(route.auth, token)
            if grant is None:
                verdict = await self._verify(scope, route, token, forwarded)
                if isinstance(verdict, Denial):
                    await _send_refusal(send, verdict, rid)
                    return
                grant = verdict
            if from_cookie:
                headers = _with_bearer(headers, token)
            headers.extend(grant.headers)
        headers.extend(forwarded)
        status = await proxy_http(
            self._session,
            scope,
            receive,
            send,
            url=upstream_url(base, scope),
            headers=headers,
            has_body=req.chunked or req.content_length not in (None, "0"),
            request_id=rid,
            upstream_name=route.upstream,
        )
        if not 200 <= status < 300:
            return
        if route.ends_session and token and scope["method"] == "POST":
            self.gate.end_session(token)
        elif route.changes_devices and scope["method"] != "GET":
            key = device_revocation_key(scope["path"])
            if key is not None:
                self.gate.revoke_device(key)

    async def _ui(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        req: RequestHeaders,
        client: Origin,
        base: str,
    ) -> None:
        """The web UI: its files, proxied; `/` and `/ui` redirect to `/ui/`."""
        assert self._session is not None
        rid = req.request_id
        if not scope["path"].startswith(UI_PREFIX):
            # NOTE: a permanent redirect, as the web UI's own server answers these paths.
            location = client.url(UI_PREFIX).encode("latin-1")
            await send_denial(send, 301, b"", rid, [(b"location", location)])
            return
        segments = scope["path"].split("/")
        if "." in segments or ".." in segments:
            await send_error(send, 404, "not found", rid)
            return
        if await self._over_rate_limit(send, client, rid):
            return
        await proxy_http(
            self._session,
            scope,
            receive,
            send,
            url=upstream_url(base, scope),
            headers=[*req.forward, *forwarded_headers(scope, client, rid)],
            has_body=req.chunked or req.content_length not in (None, "0"),
            request_id=rid,
            upstream_name="ui",
        )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._session is None:
            await self.startup()
        message: Message = await receive()
        if message["type"] != "websocket.connect":
            return
        req = parse_request_headers(scope, websocket=True)
        rid = req.request_id
        route = self.routes.match(scope["path"])
        if route is None:
            await deny_websocket(scope, send, 404, rid, message="not found")
            return
        base = self._addrs[route.upstream]
        if base is None:
            await deny_websocket(
                scope, send, 503, rid, message=f"{route.upstream} is not available"
            )
            return
        client = origin(scope, req, self._trusted)
        wait = self._rate_limited(client)
        if wait:
            await deny_websocket(
                scope,
                send,
                429,
                rid,
                message="too many requests",
                headers=((b"retry-after", str(wait).encode()),),
            )
            return
        forwarded = forwarded_headers(scope, client, rid)
        headers = req.forward
        if route.auth is not AuthMode.NONE:
            token, from_cookie = _credentials(route, req)
            verdict = self.gate.cached(route.auth, token) or await self._verify(
                scope, route, token, forwarded
            )
            if isinstance(verdict, Denial):
                if verdict.body is None:
                    await deny_websocket(scope, send, verdict.status, rid, message=verdict.message)
                else:
                    await deny_websocket(
                        scope,
                        send,
                        verdict.status,
                        rid,
                        body=verdict.body,
                        headers=verdict.headers,
                    )
                return
            if from_cookie:
                headers = _with_bearer(headers, token)
            headers.extend(verdict.headers)
        headers.extend(forwarded)
        await proxy_websocket(
            scope,
            receive,
            send,
            url=str(upstream_url("ws" + base.removeprefix("http"), scope)),
            headers=headers,
            request_id=rid,
            upstream_name=route.upstream,
            limits=self._ws_limits,
        )


def _is_ui(path: str) -> bool:
    return path in ("/", "/ui") or path.startswith(UI_PREFIX)


def _credentials(route: Route, req: RequestHeaders) -> tuple[str, bool]:
    """The request's token, and whether it came from the `JWT` cookie."""
    token = bearer_token(req.authorization)
    if not token and route.auth is AuthMode.USER:
        # The web UI's websockets cannot set Authorization; it sends the JWT cookie.
        token = cookie_token(req.cookie)
        return token, bool(token)
    return token, False


def _with_bearer(headers: list[tuple[str, str]], token: str) -> list[tuple[str, str]]:
    # Services read the caller from Authorization only: give them the cookie's token there.
    kept = [(n, v) for n, v in headers if n != "authorization"]
    kept.append(("Authorization", f"Bearer {token}"))
    return kept


async def _send_refusal(send: Send, verdict: Denial, request_id: str) -> None:
    if verdict.body is None:
        await send_error(send, verdict.status, verdict.message, request_id)
    else:
        await send_denial(send, verdict.status, verdict.body, request_id, verdict.headers)
