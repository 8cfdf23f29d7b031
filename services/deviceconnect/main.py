"""The deviceconnect app: `create_app(settings)` and the uvicorn configuration."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final

import uvicorn
from fastapi import FastAPI

from common.core.outbox import Outbox, OutboxRelay
from common.web.app import Resources, create_service_app
from common.web.wsserver import WebSocketProtocol
from services.deviceconnect.api.deps import Services
from services.deviceconnect.api.devices import router as devices_router
from services.deviceconnect.api.internal import PREFIX as INTERNAL_PREFIX
from services.deviceconnect.api.internal import router as internal_router
from services.deviceconnect.api.management import UPLOAD_PATH
from services.deviceconnect.api.management import router as management_router
from services.deviceconnect.app.connections import Connections
from services.deviceconnect.app.devices import DevicesApp
from services.deviceconnect.app.filetransfer import FileTransferApp
from services.deviceconnect.app.playback import PlaybackApp
from services.deviceconnect.app.sessions import SessionsApp
from services.deviceconnect.clients.auditlogs import AUDITLOGS
from services.deviceconnect.clients.nats import NatsPeers
from services.deviceconnect.config import Settings
from services.deviceconnect.store.indexes import INDEXES
from services.deviceconnect.store.mongo import MongoStore

__all__ = ["create_app", "server_config"]

STREAM_PATHS: Final = (UPLOAD_PATH,)


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the deviceconnect app; resources are created by its lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def setup(resources: Resources) -> AsyncIterator[Services]:
        instance_id = uuid.uuid4().hex
        relay = OutboxRelay(resources.db, resources.delivery, {AUDITLOGS: settings.auditlogs_addr})
        outbox = Outbox(resources.db, relay.deployed)
        store = MongoStore(resources.mongo, resources.db, outbox=outbox)
        async with contextlib.AsyncExitStack() as stack:
            peers = None
            if settings.nats_uri:
                peers = await stack.enter_async_context(
                    NatsPeers.connected(
                        settings.nats_uri,
                        instance_id=instance_id,
                        window=settings.nats_window,
                        keepalive=settings.nats_keepalive.total_seconds(),
                    )
                )
            connections = Connections(
                store,
                instance_id=instance_id,
                buffer_limit=settings.session_buffer_size,
                stall_timeout=settings.session_stall_timeout.total_seconds(),
                clock=_now,
                peers=peers,
            )
            stack.push_async_callback(connections.close)
            if peers is not None:
                await stack.enter_async_context(peers.serving(connections))
            await stack.enter_async_context(relay.running())
            yield Services(
                settings=settings,
                connections=connections,
                devices=DevicesApp(store, connections, clock=_now),
                sessions=SessionsApp(
                    store,
                    connections,
                    clock=_now,
                    recording_limit=settings.recording_max_size,
                    recording_expire=settings.recording_expire,
                    notify=relay.wake,
                ),
                transfers=FileTransferApp(
                    store,
                    connections,
                    max_file_size=settings.max_file_size,
                    timeout=settings.file_transfer_timeout.total_seconds(),
                    clock=_now,
                    notify=relay.wake,
                ),
                playback=PlaybackApp(store),
            )

    return create_service_app(
        settings,
        name="deviceconnect",
        internal_prefix=INTERNAL_PREFIX,
        routers=[devices_router, management_router, internal_router],
        indexes=INDEXES,
        setup=setup,
        stream_paths=STREAM_PATHS,
    )


def server_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    """The uvicorn configuration: websocket keep-alive and message size from the settings."""
    options: dict[str, object] = {
        "host": settings.listen_host,
        "port": settings.listen_port,
        "log_config": None,
        "ws": WebSocketProtocol,
        "ws_max_size": settings.max_message_size,
        "ws_ping_interval": settings.ping_interval.total_seconds(),
        "ws_ping_timeout": settings.ping_timeout.total_seconds(),
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 10,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]
