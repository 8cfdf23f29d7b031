"""The gateway as a raw ASGI application: route, check the token, proxy.

It is deliberately not a FastAPI app: on the hot path every request is one route lookup,
one cache lookup and one proxied request over a pooled aiohttp session (see the measurement
table in ARCHITECTURE.md and `bench/gateway_bench.py`).

`GET /status` answers 204 while the process serves requests: the gateway's own liveness
check (internal paths are never routed, so services' health endpoints are not reachable
through it). With the web UI deployed (`ui_addr`), `/ui/...` is proxied to it without a
token check, as Mender's own gateway does, and `/` and `/ui` redirect to `/ui/` on the
scheme and host the client used.

Every HTTP request is measured under its route-table entry (`gateway.metrics`); the metrics
are served by a listener of their own, never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Final

import aiohttp
import nats
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from common.core.metrics import UNMATCHED_ROUTE, RequestMetrics
from common.core.revocations import REVOCATIONS_HEADER, subject
from gateway._types import Message, Receive, Scope, Send
from gateway.auth import DEVICE_CLAIMS, USER_CLAIMS, Denial, TokenGate
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
    request_target,
)
from gateway.issuers import Issuer, IssuerUnavailable
from gateway.metrics import WEBSOCKETS, MetricsListener
from gateway.proxy import RelayRequest, proxy_http, upstream_url
from gateway.ratelimit import RateLimiter
from gateway.responses import send_denial, send_error
from gateway.routes import AuthMode, Route, RouteTable
from gateway.wsproxy import WsLimits, deny_websocket, proxy_websocket

__all__ = ["STATUS_PATH", "UI_PREFIX", "Gateway"]

STATUS_PATH: Final = "/status"
UI_PREFIX: Final = "/ui/"
# Where `_http` leaves the route label of a request for its metrics.
_ROUTE_KEY: Final = "fleetport.route"
_UI_ROUTE: Final = "ui"
# Idle upstream connections are closed before uvicorn's default 5 s keep-alive would close
# them from the other end, so a request never lands on a connection being torn down.
_UPSTREAM_KEEPALIVE: Final = 2.0
_log = logging.getLogger("gateway")
# The upstreams that issue tokens: the kind they issue and the claims it always has.
_ISSUERS: Final = {
    "deviceauth": (AuthMode.DEVICE, DEVICE_CLAIMS),
    "useradm": (AuthMode.USER, USER_CLAIMS),
}


class Gateway:
    """The ASGI callable: HTTP and websocket proxying behind token checks, plus lifespan."""

    def __init__(
        self,
        settings: Settings,
        *,
        routes: RouteTable | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.routes = routes or RouteTable()
        self._addrs: dict[str, str | None] = {u: settings.upstream_addr(u) for u in UPSTREAMS}
        self._trusted = TrustedProxies(settings.trusted_proxies)
        self._wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None
        self._gate: TokenGate | None = None
        self._issuers: dict[str, Issuer] = {}
        self._followers: list[asyncio.Task[None]] = []
        self._nats: Nats | None = None
        self._limiter = (
            RateLimiter(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
            if settings.rate_limit_per_second > 0
            else None
        )
        self._ws_limits = WsLimits(
            handshake_timeout=settings.connect_timeout + settings.read_timeout,
            max_size=settings.ws_max_message_size,
        )
        self._measured_http = RequestMetrics(self._http, route_of=_route_label, database=False)
        self._metrics = (
            MetricsListener(settings.metrics_host, settings.metrics_port)
            if settings.metrics_port is not None
            else None
        )

    @property
    def gate(self) -> TokenGate:
        """The token checker (exists once the gateway has started)."""
        if self._gate is None:
            raise RuntimeError("the gateway has not started")
        return self._gate

    @property
    def metrics_port(self) -> int | None:
        """The port of the private metrics listener, when it runs."""
        return self._metrics.port if self._metrics is not None else None

    def issuer(self, name: str) -> Issuer:
        """What the gateway knows of a token issuer (`deviceauth`, `useradm`)."""
        return self._issuers[name]

    async def startup(self) -> None:
        """Open the shared upstream session, then load the issuers' keys and revocations."""
        if self._session is not None:
            return
        settings = self.settings
        if self._metrics is not None:
            self._metrics.start()
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
        modes = {
            "deviceauth": (AuthMode.DEVICE, DEVICE_CLAIMS),
            "useradm": (AuthMode.USER, USER_CLAIMS),
        }
        for name, (_, claims) in modes.items():
            base = self._addrs[name]
            if base is not None:
                self._issuers[name] = Issuer(
                    name,
                    base,
                    self._session,
                    require=claims,
                    timeout=settings.verify_timeout,
                    key_refetch_interval=settings.key_refetch_interval,
                    report_interval=settings.token_use_report_interval,
                    wall_clock=self._wall_clock,
                )
        self._gate = TokenGate(
            {_ISSUERS[name][0]: issuer for name, issuer in self._issuers.items()},
            max_size=settings.token_cache_size,
            wall_clock=self._wall_clock,
        )
        if settings.nats_uri is not None:
            self._nats = await _subscribe(settings.nats_uri, self._issuers)
        self._followers = [
            asyncio.create_task(work, name=f"{name}-tokens")
            for name, issuer in self._issuers.items()
            for work in (issuer.follow(), issuer.report_uses())
        ]
        for issuer in self._issuers.values():
            if not await issuer.wait_ready(settings.verify_timeout):
                _log.warning("%s: tokens are refused until its keys can be read", issuer.name)
        if settings.dev_mode:
            for route in self.routes:
                where = self._addrs[route.upstream] or "not deployed"
                _log.info("route %s -> %s (%s)", route.prefix, where, route.auth.value)

    async def shutdown(self) -> None:
        """Stop following the issuers; close the upstream session."""
        for task in self._followers:
            task.cancel()
        for task in self._followers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._followers = []
        if self._nats is not None:
            await self._nats.close()
            self._nats = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.stop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: an HTTP request, a websocket, or the lifespan."""
        kind = scope["type"]
        if kind == "http":
            await self._measured_http(scope, receive, send)
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

    async def _refusal(self, route: Route, token: str) -> Denial | None:
        """Why the token may not be used on this route, or None."""
        try:
            return await self.gate.check(route.auth, token)
        except IssuerUnavailable as exc:
            return Denial(503, f"{exc} is not available")

    async def _catch_up(self, upstream: str, headers: Mapping[str, str]) -> None:
        """Apply a revocation the issuer just recorded before its answer is relayed."""
        issuer = self._issuers.get(upstream)
        value = headers.get(REVOCATIONS_HEADER)
        if issuer is None or value is None or not value.isdigit():
            return
        try:
            async with asyncio.timeout(self.settings.verify_timeout):
                await issuer.catch_up(int(value))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
            # The follower still applies it, a moment later.
            _log.warning("cannot read the revocations of %s at once: %s", upstream, exc)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._session is None:
            await self.startup()
        assert self._session is not None
        path: str = scope["path"]
        req = parse_request_headers(scope)
        rid = req.request_id
        if path == STATUS_PATH:
            scope[_ROUTE_KEY] = STATUS_PATH
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
            scope[_ROUTE_KEY] = _UI_ROUTE
            await self._ui(scope, receive, send, req, client, ui)
            return
        route = self.routes.match(path)
        if route is None:
            await send_error(send, 404, "not found", rid)
            return
        scope[_ROUTE_KEY] = route.prefix
        base = self._addrs[route.upstream]
        if base is None:
            await send_error(send, 503, f"{route.upstream} is not available", rid)
            return
        if await self._over_rate_limit(send, client, rid):
            return
        target = request_target(scope)
        headers = req.forward
        if route.auth is not AuthMode.NONE:
            token, from_cookie = _credentials(route, req)
            refusal = await self._refusal(route, token)
            if refusal is not None:
                await send_error(send, refusal.status, refusal.message, rid)
                return
            if from_cookie:
                headers = _with_bearer(headers, token)
        headers.extend(forwarded_headers(target, client, rid))
        await proxy_http(
            self._session,
            scope,
            receive,
            send,
            url=upstream_url(base, target),
            headers=headers,
            has_body=req.chunked or req.content_length not in (None, "0"),
            request_id=rid,
            upstream_name=route.upstream,
            before_response=self._catch_up if route.upstream in self._issuers else None,
        )

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
        target = request_target(scope)
        await proxy_http(
            self._session,
            scope,
            receive,
            send,
            url=upstream_url(base, target),
            headers=[*req.forward, *forwarded_headers(target, client, rid)],
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
        target = request_target(scope)
        headers = req.forward
        if route.auth is not AuthMode.NONE:
            token, from_cookie = _credentials(route, req)
            refusal = await self._refusal(route, token)
            if refusal is not None:
                await deny_websocket(scope, send, refusal.status, rid, message=refusal.message)
                return
            if from_cookie:
                headers = _with_bearer(headers, token)
        headers.extend(forwarded_headers(target, client, rid))
        websockets = WEBSOCKETS.labels(route.upstream)
        websockets.inc()
        try:
            await proxy_websocket(
                scope,
                receive,
                send,
                url=str(upstream_url("ws" + base.removeprefix("http"), target)),
                headers=headers,
                request_id=rid,
                upstream_name=route.upstream,
                limits=self._ws_limits,
            )
        finally:
            websockets.dec()


def _route_label(scope: Scope) -> str:
    """The route a request is measured under: its route-table entry, never its path."""
    label: str = scope.get(_ROUTE_KEY, UNMATCHED_ROUTE)
    return label


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


async def _subscribe(uri: str, issuers: Mapping[str, Issuer]) -> Nats:
    """Connect to NATS and apply each issuer's published revocations as they come."""
    client = await nats.connect(uri, name="gateway", max_reconnect_attempts=-1)
    for name, issuer in issuers.items():

        async def apply(msg: Msg, issuer: Issuer = issuer) -> None:
            issuer.apply_message(msg.data)

        await client.subscribe(subject(name), cb=apply)
    return client
