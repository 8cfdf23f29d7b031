"""The app factory every service uses: errors, request ids, body limits, health, lifespan.

Every service has the same shape. Its `main.create_app(settings)` calls `create_service_app`
with a `setup`: an async context manager that receives the shared `Resources` (settings,
Mongo client and database, HTTP clients), builds the service's stores and use-cases, and
yields them as one frozen dataclass, `Services`, declared in the service's `api/deps.py`.
That module turns its parts into `Annotated` aliases for the routes:

    ServicesDep = Annotated[Services, Depends(services_dependency(Services))]

    def _users(services: ServicesDep) -> UsersApp:
        return services.users

    UsersAppDep = Annotated[UsersApp, Depends(_users)]

Tests reach the same object with `services_of(app, Services)`. The service's `__main__`
is `serve(create_app, Settings())`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Final, TypeVar

import aiohttp
import httpx
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import common.web.routing  # noqa: F401  (registers the `tenant` path convertor)
from common.core.errors import ServiceError
from common.core.logging import configure_logging
from common.core.metrics import UNMATCHED_ROUTE, RequestMetrics
from common.core.mongo import Document, create_client, ensure_indexes, ping
from common.core.requestid import REQUEST_ID_HEADER, current_request_id, request_id_var
from common.core.revocations import (
    REVOCATIONS_HEADER,
    recorded_sequence,
    reset_recorded_sequence,
    restore_recorded_sequence,
)
from common.core.settings import BaseServiceSettings
from common.web.lean import LeanHandler, LeanRoutes

__all__ = [
    "METRICS_PATH",
    "Resources",
    "Setup",
    "create_service_app",
    "error_response",
    "resources",
    "serve",
    "services_dependency",
    "services_of",
    "websocket_refusal",
]

_log = logging.getLogger("common.web.app")


@dataclass(frozen=True)
class Resources:
    """What the lifespan owns and hands to requests through `app.state.resources`."""

    settings: BaseServiceSettings
    mongo: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    http: httpx.AsyncClient
    # The outbox relay's: httpx's connection pool looks at every pooled connection on each
    # request, and the relay keeps up to its concurrency of them open per peer.
    delivery: aiohttp.ClientSession


# Builds a service's typed `Services` object from the shared resources and yields it for the
# app's lifetime; what follows the yield runs at shutdown.
Setup = Callable[[Resources], AbstractAsyncContextManager[object]]

_S = TypeVar("_S")
_Settings = TypeVar("_Settings", bound=BaseServiceSettings)


def resources(request: Request) -> Resources:
    """Return the resources of the app serving the request."""
    res: Resources = request.app.state.resources
    return res


def services_of(app: FastAPI, kind: type[_S]) -> _S:
    """Return the services object the app's setup yielded, checked to be a `kind`."""
    services = getattr(app.state, "services", None)
    if not isinstance(services, kind):
        raise TypeError(f"the app's services are {type(services).__name__}, not {kind.__name__}")
    return services


def services_dependency(kind: type[_S]) -> Callable[[Request], Awaitable[_S]]:
    """Build a route dependency that returns the app's services object of type `kind`.

    It is a coroutine function although it never waits: FastAPI runs plain functions in a
    worker thread, a hop that costs more than most routes' own work.
    """

    async def services(request: Request) -> _S:
        return services_of(request.app, kind)

    return services


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Render Mender's error body `{"error", "request_id"}`."""
    return JSONResponse(
        {"error": message, "request_id": current_request_id()},
        status_code=status,
        headers=dict(headers or {}),
    )


def websocket_refusal(exc: BaseException) -> tuple[int, str] | None:
    """How a websocket handshake failing with `exc` is refused (status, message), if known.

    Exception handlers do not answer websocket handshakes: a websocket route that cannot
    accept turns its error into a denial response with this, as an HTTP route would answer.
    """
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.message
    if isinstance(exc, ConnectionFailure):
        _log.warning("database unavailable: %s", exc)
        return 503, "database is unreachable"
    return None


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc)
        if err.get("type") == "json_invalid":
            return (
                f"failed to decode request body: {err.get('ctx', {}).get('error', 'invalid JSON')}"
            )
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "invalid request: " + "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        if exc.body is not None:
            return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)
        return error_response(exc.status_code, exc.message, exc.headers)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, _validation_message(exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return error_response(exc.status_code, str(message), exc.headers)

    async def database_unavailable(_: Request, exc: Exception) -> Response:
        _log.warning("database unavailable: %s", exc)
        return error_response(503, "database is unreachable")

    async def unexpected(_: Request, exc: Exception) -> Response:
        _log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ConnectionFailure, database_unavailable)
    app.add_exception_handler(Exception, unexpected)


_REQUEST_ID_KEY: Final = REQUEST_ID_HEADER.lower().encode()
_REVOCATIONS_KEY: Final = REVOCATIONS_HEADER.lower().encode()
_MAX_REQUEST_ID_LEN: Final = 128


def _incoming_request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == _REQUEST_ID_KEY:
            text: str = value.decode("latin-1").strip()
            if text and len(text) <= _MAX_REQUEST_ID_LEN and text.isprintable():
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
        rid = _incoming_request_id(scope)
        token = request_id_var.set(rid)
        recorded = reset_recorded_sequence()
        raw = rid.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _REQUEST_ID_KEY]
                headers.append((_REQUEST_ID_KEY, raw))
                seq = recorded_sequence()
                if seq is not None:
                    headers.append((_REVOCATIONS_KEY, str(seq).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            restore_recorded_sequence(recorded)
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuses request bodies over a limit with 413, counting streamed (chunked) bodies too.

    Paths matching one of the `exempt` patterns (artifact uploads) stream their bodies and
    enforce their own limits.
    """

    def __init__(self, app: ASGIApp, *, limit: int, exempt: Sequence[str] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = re.compile("|".join(f"(?:{p})" for p in exempt)) if exempt else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.exempt is not None and self.exempt.fullmatch(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        refused = False

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer now and tell the app the client went away; whatever the app
                    # sends afterwards is dropped.
                    await self._refuse(scope, receive, send)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body exceeds the limit of {self.limit} bytes")
        await response(scope, receive, send)


def _health_router(internal_prefix: str) -> APIRouter:
    router = APIRouter(prefix=internal_prefix, tags=["internal"])

    @router.get("/health", status_code=204)
    async def health(request: Request) -> Response:
        """Check the service and its database: 204 when healthy, 503 otherwise."""
        if await ping(resources(request).db):
            return Response(status_code=204)
        return error_response(503, "database is unreachable")

    @router.get("/alive", status_code=204)
    async def alive() -> Response:
        """Liveness: 204 while the process serves requests."""
        return Response(status_code=204)

    return router


METRICS_PATH: Final = "/metrics"


def _route_template(scope: Scope) -> str:
    """The template of the route that took the request (`/devices/{id}`), never its path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class _ServiceApp(FastAPI):
    """A FastAPI app whose request id is known in every layer, the last-resort 500 included.

    Its requests are measured around that layer too (`common.core.metrics`), and it serves
    `GET /metrics`: a path the gateway never routes, so only the internal network reads it.
    """

    def build_middleware_stack(self) -> ASGIApp:
        # Starlette renders an unhandled exception's 500 in its outermost layer, outside the
        # added middleware: the request id is set around that layer, or the 500 has none.
        measured = RequestMetrics(
            super().build_middleware_stack(), route_of=_route_template, expose=METRICS_PATH
        )
        return RequestIdMiddleware(measured)


def create_service_app(
    settings: BaseServiceSettings,
    *,
    name: str,
    internal_prefix: str,
    routers: Iterable[APIRouter],
    indexes: Mapping[str, Sequence[IndexModel]] | None = None,
    setup: Setup | None = None,
    stream_paths: Sequence[str] = (),
    lean_routes: Mapping[tuple[str, str], LeanHandler] | None = None,
) -> FastAPI:
    """Build a service app: the shared behaviour plus the service's routers and set-up.

    `setup(resources)` is an async context manager run inside the lifespan: it builds the
    service's stores and use-cases, starts its background work, and yields its `Services`
    object, which routes then reach through `services_dependency`.
    `stream_paths` are regular expressions of the paths whose bodies the routes stream
    themselves (uploads): the JSON body limit does not apply to them.
    `lean_routes` answer chosen hot requests before FastAPI's routing (`common.web.lean`),
    inside the body limit and the request id.
    """
    configure_logging(name, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongo = create_client(settings.mongo_url)
        db = mongo[settings.mongo_db or name]
        connect = min(3.0, settings.peer_timeout)
        timeout = httpx.Timeout(settings.peer_timeout, connect=connect)
        async with (
            httpx.AsyncClient(timeout=timeout) as http,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=settings.peer_timeout, connect=connect),
            ) as delivery,
        ):
            res = Resources(settings=settings, mongo=mongo, db=db, http=http, delivery=delivery)
            app.state.resources = res
            try:
                await ensure_indexes(db, indexes or {})
                if setup is None:
                    yield
                else:
                    async with setup(res) as services:
                        app.state.services = services
                        yield
            finally:
                await mongo.close()

    app = _ServiceApp(title=f"Fleetport {name}", lifespan=lifespan, openapi_url=None)
    _install_error_handlers(app)
    app.include_router(_health_router(internal_prefix))
    for router in routers:
        app.include_router(router)
    if lean_routes:
        app.add_middleware(LeanRoutes, routes=lean_routes)
    app.add_middleware(
        BodyLimitMiddleware, limit=settings.request_size_limit, exempt=tuple(stream_paths)
    )
    return app


def serve(create_app: Callable[[_Settings], FastAPI], settings: _Settings) -> None:
    """Serve a service's app with uvicorn on its configured address until interrupted."""
    # Logging is configured by create_service_app; uvicorn's own configuration would undo it.
    uvicorn.run(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
    )
