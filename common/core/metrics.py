"""Prometheus metrics every process exports, and the ASGI middleware that measures requests.

The families live in `prometheus_client`'s process-wide registry, created once at import:
labels are bounded (a route's template, never its raw path; a known method or `OTHER`), so
the number of series does not grow with the devices or the requests.

`RequestMetrics` wraps an ASGI app (a service's FastAPI app, the gateway): it times every
HTTP request until its response ends, under the route template `route_of(scope)` names once
the app has routed it, and counts the database commands the request caused (the
`common.core.mongo` client reports each to `count_database_operation`, which adds to the
request's counter held in a contextvar). It also answers `GET <expose>` with the registry
in the Prometheus text format, when given a path; the gateway exposes its metrics on a
listener of their own instead (`gateway.metrics`).

The outbox's families are here too: `OutboxRelay` refreshes them as it delivers, so a
scrape reads cached values and never queries the database.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = [
    "DATABASE_OPERATIONS",
    "OUTBOX_BACKLOG",
    "OUTBOX_DELIVERIES",
    "OUTBOX_OLDEST_AGE",
    "REQUEST_DURATION",
    "UNMATCHED_ROUTE",
    "RequestMetrics",
    "count_database_operation",
    "exposition",
]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

# The route label of a request no route took (a 404 answered by the router).
UNMATCHED_ROUTE: Final = "unmatched"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Its `_count` series is the number of requests answered.
REQUEST_DURATION: Final = Histogram(
    "fleetport_http_request_duration_seconds",
    "HTTP requests answered, by route template, method and status: the time until the "
    "response ended.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DATABASE_OPERATIONS: Final = Histogram(
    "fleetport_db_operations_per_request",
    "Database commands an HTTP request caused, by route template.",
    ["route"],
    buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
OUTBOX_BACKLOG: Final = Gauge(
    "fleetport_outbox_backlog",
    "Effects waiting for delivery to a peer (counted by the relay every few seconds).",
    ["peer"],
)
OUTBOX_OLDEST_AGE: Final = Gauge(
    "fleetport_outbox_oldest_age_seconds",
    "Age of the oldest effect waiting for delivery to a peer (0 when none waits).",
    ["peer"],
)
OUTBOX_DELIVERIES: Final = Counter(
    "fleetport_outbox_deliveries_total",
    "Outbox delivery attempts, by peer and outcome (done, retry, refused).",
    ["peer", "outcome"],
)

# The database commands of the request being handled; None outside requests.
_operations: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "fleetport_db_operations", default=None
)


def count_database_operation() -> None:
    """Count one database command for the request being handled (if any)."""
    counter = _operations.get()
    if counter is not None:
        counter[0] += 1


def exposition() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class RequestMetrics:
    """Pure ASGI middleware: times HTTP requests and counts their database commands."""

    def __init__(
        self,
        app: _App,
        *,
        route_of: Callable[[_Scope], str],
        expose: str | None = None,
        database: bool = True,
    ) -> None:
        self.app = app
        self._route_of = route_of
        self._expose = expose
        self._database = database

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == self._expose and scope["method"] in ("GET", "HEAD"):
            await _send_exposition(send)
            return
        status = 500  # what the server answers when the app fails before responding
        counter = [0]
        # An app that queries no database (the gateway) has no commands to count.
        token = _operations.set(counter) if self._database else None
        started = time.perf_counter()

        async def watch_status(message: _Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch_status)
        finally:
            elapsed = time.perf_counter() - started
            if token is not None:
                _operations.reset(token)
            route = self._route_of(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            _duration_series(route, method, status).observe(elapsed)
            if token is not None:
                _operations_series(route).observe(counter[0])


# The labelled series, each looked up once (`labels()` costs more than the observation);
# the caches are as bounded as the labels.
@functools.cache
def _duration_series(route: str, method: str, status: int) -> Histogram:
    return REQUEST_DURATION.labels(route, method, str(status))


@functools.cache
def _operations_series(route: str) -> Histogram:
    return DATABASE_OPERATIONS.labels(route)


async def _send_exposition(send: _Send) -> None:
    body, content_type = exposition()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type.encode("latin-1"))],
        }
    )
    await send({"type": "http.response.body", "body": body})
