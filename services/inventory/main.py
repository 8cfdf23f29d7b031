"""The inventory app: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.web.app import Resources, create_service_app
from services.inventory.api import (
    devices_router,
    internal_v1,
    internal_v2,
    management_v1,
    management_v2,
    management_v2alpha1,
)
from services.inventory.api.deps import Services
from services.inventory.api.internal import PREFIX_V1
from services.inventory.app import InventoryApp
from services.inventory.clients import HttpDevicemonitorClient
from services.inventory.config import Settings
from services.inventory.store.indexes import INDEXES
from services.inventory.store.mongo import MongoStore

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the inventory service (settings from the environment unless given)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def setup(resources: Resources) -> AsyncIterator[Services]:
        devicemonitor = None
        if settings.devicemonitor_addr:
            devicemonitor = HttpDevicemonitorClient(resources.http, settings.devicemonitor_addr)
        yield Services(
            settings=settings,
            inventory=InventoryApp(
                MongoStore(resources.db),
                limit_attributes=settings.limit_attributes,
                limit_tags=settings.limit_tags,
                report_refresh=settings.report_refresh,
                devicemonitor=devicemonitor,
            ),
        )

    return create_service_app(
        settings,
        name="inventory",
        internal_prefix=PREFIX_V1,
        routers=[
            devices_router,
            management_v1,
            management_v2,
            management_v2alpha1,
            internal_v1,
            internal_v2,
        ],
        indexes=INDEXES,
        setup=setup,
    )
