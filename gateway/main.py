"""Building and serving the gateway: `create_app(settings)` and the uvicorn configuration."""

from __future__ import annotations

import uvicorn

from common.core.logging import configure_logging
from common.web.wsserver import WebSocketProtocol
from gateway.app import Gateway
from gateway.config import Settings

__all__ = ["create_app", "run", "server_config"]


def create_app(settings: Settings | None = None) -> Gateway:
    """Build the gateway ASGI app from settings (the environment when none are given)."""
    return Gateway(settings or Settings())


def server_config(app: Gateway, **overrides: object) -> uvicorn.Config:
    """The uvicorn configuration the gateway runs with.

    Upstream `Date`/`Server` headers are relayed, so uvicorn adds none of its own; client
    addresses come from the socket, never from client-supplied forwarding headers. The
    websocket server is the `websockets` library's current (sans-I/O) implementation, which
    logs a refused handshake as one access line. With a certificate and key, it serves HTTPS
    and WSS (HTTP/1.1) itself.
    """
    settings = app.settings
    options: dict[str, object] = {
        "host": settings.listen_host,
        "port": settings.listen_port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": WebSocketProtocol,
        "ws_max_size": settings.ws_max_message_size,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        options["ssl_keyfile"] = str(settings.tls_key_file)
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def run(settings: Settings | None = None) -> None:
    """Serve the gateway until interrupted."""
    settings = settings or Settings()
    configure_logging("gateway", settings.log_level)
    uvicorn.Server(server_config(create_app(settings))).run()
