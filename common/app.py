"""The app factory every service uses: errors, request ids, body limits, health, lifespan."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import common.routing  # noqa: F401  (registers the `tenant` path convertor)
from common.errors import ServiceError
from common.logging import configure_logging
from common.mongo import Document, create_client, ensure_indexes, ping
from common.requestid import RequestIdMiddleware, current_request_id
from common.settings import BaseServiceSettings

__all__ = ["Resources", "create_service_app", "error_response", "resources"]

_log = logging.getLogger("common.app")


@dataclass(frozen=True)
class Resources:
    """What the lifespan owns and hands to requests through `app.state.resources`."""

    settings: BaseServiceSettings
    mongo: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    http: httpx.AsyncClient


Setup = Callable[[FastAPI, Resources], AbstractAsyncContextManager[None]]


def resources(request: Request) -> Resources:
    """Return the resources of the app serving the request."""
    res: Resources = request.app.state.resources
    return res


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Render Mender's error body `{"error", "request_id"}`."""
    return JSONResponse(
        {"error": message, "request_id": current_request_id()},
        status_code=status,
        headers=dict(headers or {}),
    )


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


class _ServiceApp(FastAPI):
    """A FastAPI app whose request id is known in every layer, the last-resort 500 included."""

    def build_middleware_stack(self) -> ASGIApp:
        # Starlette renders an unhandled exception's 500 in its outermost layer, outside the
        # added middleware: the request id is set around that layer, or the 500 has none.
        return RequestIdMiddleware(super().build_middleware_stack())


def create_service_app(
    settings: BaseServiceSettings,
    *,
    name: str,
    internal_prefix: str,
    routers: Iterable[APIRouter],
    indexes: Mapping[str, Sequence[IndexModel]] | None = None,
    setup: Setup | None = None,
    stream_paths: Sequence[str] = (),
) -> FastAPI:
    """Build a service app: the shared behaviour plus the service's routers and set-up.

    `setup(app, resources)` is an async context manager run inside the lifespan: it builds
    the service's stores and use-cases onto `app.state` and starts/stops background work.
    `stream_paths` are regular expressions of the paths whose bodies the routes stream
    themselves (uploads): the JSON body limit does not apply to them.
    """
    configure_logging(name, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongo = create_client(settings.mongo_url)
        db = mongo[settings.mongo_db or name]
        timeout = httpx.Timeout(settings.peer_timeout, connect=min(3.0, settings.peer_timeout))
        async with httpx.AsyncClient(timeout=timeout) as http:
            res = Resources(settings=settings, mongo=mongo, db=db, http=http)
            app.state.resources = res
            try:
                await ensure_indexes(db, indexes or {})
                if setup is None:
                    yield
                else:
                    async with setup(app, res):
                        yield
            finally:
                await mongo.close()

    app = _ServiceApp(title=f"Fleetport {name}", lifespan=lifespan, openapi_url=None)
    _install_error_handlers(app)
    app.include_router(_health_router(internal_prefix))
    for router in routers:
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware, limit=settings.request_size_limit, exempt=tuple(stream_paths)
    )
    return app
