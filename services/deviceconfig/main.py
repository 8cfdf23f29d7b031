"""The deviceconfig app: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.core.audit import AUDITLOGS
from common.core.outbox import Outbox, OutboxRelay
from common.web.app import Resources, create_service_app
from services.deviceconfig.api import devices_router, internal_router, management_router
from services.deviceconfig.api.deps import Services
from services.deviceconfig.api.internal import PREFIX as INTERNAL_PREFIX
from services.deviceconfig.app import DeviceConfigApp
from services.deviceconfig.clients import HttpDeploymentsClient, HttpDeviceconnectClient
from services.deviceconfig.config import Settings
from services.deviceconfig.store.indexes import INDEXES
from services.deviceconfig.store.mongo import MongoStore

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the deviceconfig app (settings from the environment unless given)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def setup(resources: Resources) -> AsyncIterator[Services]:
        deployments = (
            HttpDeploymentsClient(resources.http, settings.deployments_addr)
            if settings.deployments_addr
            else None
        )
        # A nudge is not worth a retry: the device polls anyway.
        deviceconnect = (
            HttpDeviceconnectClient(resources.http, settings.deviceconnect_addr, retries=0)
            if settings.deviceconnect_addr
            else None
        )
        relay = OutboxRelay(resources.db, resources.delivery, {AUDITLOGS: settings.auditlogs_addr})
        store = MongoStore(
            resources.mongo, resources.db, outbox=Outbox(resources.db, relay.deployed)
        )
        async with relay.running():
            yield Services(
                settings=settings,
                configurations=DeviceConfigApp(
                    store, deployments=deployments, deviceconnect=deviceconnect, notify=relay.wake
                ),
            )

    return create_service_app(
        settings,
        name="deviceconfig",
        internal_prefix=INTERNAL_PREFIX,
        routers=[devices_router, management_router, internal_router],
        indexes=INDEXES,
        setup=setup,
    )
