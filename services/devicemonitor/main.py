"""The devicemonitor app: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI

from common.core.outbox import Outbox, OutboxRelay
from common.web.app import Resources, create_service_app
from services.devicemonitor.api import (
    devices_router,
    internal_router,
    management_router,
    telemetry_router,
)
from services.devicemonitor.api.deps import Services
from services.devicemonitor.api.internal import PREFIX as INTERNAL_PREFIX
from services.devicemonitor.app import AlertsApp, TelemetryApp
from services.devicemonitor.clients import AUDITLOGS, INVENTORY
from services.devicemonitor.config import Settings
from services.devicemonitor.store.indexes import INDEXES
from services.devicemonitor.store.mongo import MongoStore
from services.devicemonitor.store.telemetry import MongoTelemetryStore

__all__ = ["create_app"]

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the devicemonitor app (settings from the environment unless given)."""
    settings = settings or Settings()
    now = clock or _now

    @asynccontextmanager
    async def setup(resources: Resources) -> AsyncIterator[Services]:
        relay = OutboxRelay(
            resources.db,
            resources.delivery,
            {INVENTORY: settings.inventory_addr, AUDITLOGS: settings.auditlogs_addr},
        )
        store = MongoStore(
            resources.mongo, resources.db, outbox=Outbox(resources.db, relay.deployed)
        )
        samples = MongoTelemetryStore(
            resources.mongo, resources.db, alerts=store, retention=settings.telemetry_retention
        )
        async with relay.running():
            yield Services(
                settings=settings,
                alerts=AlertsApp(
                    store,
                    clock=now,
                    max_batch=settings.max_alerts_per_batch,
                    max_skew=settings.max_clock_skew,
                    notify=relay.wake,
                ),
                telemetry=TelemetryApp(
                    samples,
                    clock=now,
                    max_batch=settings.max_samples_per_batch,
                    max_skew=settings.max_clock_skew,
                    poll_interval=settings.stream_poll_interval,
                    thresholds_ttl=settings.thresholds_cache_ttl,
                    notify=relay.wake,
                ),
            )

    return create_service_app(
        settings,
        name="devicemonitor",
        internal_prefix=INTERNAL_PREFIX,
        routers=[devices_router, management_router, telemetry_router, internal_router],
        indexes=INDEXES,
        setup=setup,
    )
