"""The gateway's own metrics, and the listener that serves them apart from the public API.

The gateway is the public face of the server: its `/metrics` is not on the public listener
(a path there is proxied or refused like any other). With `GATEWAY_METRICS_PORT` set, a
second listener serves them in the Prometheus text format, on `GATEWAY_METRICS_HOST`
(127.0.0.1 unless set otherwise: a scraper on another host needs the address of a private
interface). It is `prometheus_client`'s own small HTTP server, in a thread: it reads the
counters, which are safe to read from any thread.

Requests are measured by `common.core.metrics.RequestMetrics`, with the matched entry of the
route table as the route (`/api/devices/v{N}/deployments`), or `/status`, `ui`, `unmatched`.
"""

from __future__ import annotations

import functools
import threading
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, start_http_server

__all__ = [
    "REVOCATION_SEQUENCE",
    "REVOCATION_SYNCED",
    "TOKEN_CACHE",
    "TOKEN_CHECKS",
    "WEBSOCKETS",
    "MetricsListener",
    "token_cache",
    "token_checks",
]

TOKEN_CACHE: Final = Counter(
    "fleetport_gateway_token_cache_total",
    "Token checks by kind (device, user) and whether the token's verified signature was "
    "remembered (hit) or had to be checked (miss).",
    ["kind", "result"],
)
TOKEN_CHECKS: Final = Counter(
    "fleetport_gateway_token_checks_total",
    "Token checks by kind and outcome: accepted, or the reason of the refusal (missing, "
    "malformed, invalid, expired, revoked, wrong_kind, unauthorized, scope, unavailable).",
    ["kind", "outcome"],
)
REVOCATION_SYNCED: Final = Gauge(
    "fleetport_gateway_revocation_last_sync_timestamp_seconds",
    "When the issuer's revocation feed was last read successfully (Unix time); a long poll "
    "is held up to 5 s, so an up-to-date gateway is never more than that behind.",
    ["issuer"],
)
REVOCATION_SEQUENCE: Final = Gauge(
    "fleetport_gateway_revocation_sequence",
    "The issuer's revocation sequence number the gateway has applied.",
    ["issuer"],
)
WEBSOCKETS: Final = Gauge(
    "fleetport_gateway_websockets",
    "Websockets open through the gateway, by upstream (deviceconnect: connected devices "
    "and users' sessions).",
    ["upstream"],
)


@functools.cache
def token_cache(kind: str, result: str) -> Counter:
    """The series of `TOKEN_CACHE` for these labels, looked up once."""
    return TOKEN_CACHE.labels(kind, result)


@functools.cache
def token_checks(kind: str, outcome: str) -> Counter:
    """The series of `TOKEN_CHECKS` for these labels, looked up once."""
    return TOKEN_CHECKS.labels(kind, outcome)


class MetricsListener:
    """The private listener serving the registry (`start` / `stop`)."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when configured as 0)."""
        if self._server is None:
            raise RuntimeError("the metrics listener is not running")
        return int(self._server.server_port)

    def start(self) -> None:
        """Listen and serve in a background thread."""
        if self._server is None:
            self._server, self._thread = start_http_server(self._port, addr=self._host)

    def stop(self) -> None:
        """Stop listening; wait for the thread to end."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
