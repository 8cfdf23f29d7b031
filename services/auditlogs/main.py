"""The auditlogs app: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.web.app import Resources, create_service_app
from services.auditlogs.api import internal_router, management_router
from services.auditlogs.api.deps import Services
from services.auditlogs.api.internal import PREFIX as INTERNAL_PREFIX
from services.auditlogs.app import AuditLogsApp
from services.auditlogs.clients import HttpUseradmClient
from services.auditlogs.config import Settings
from services.auditlogs.store.indexes import INDEXES
from services.auditlogs.store.mongo import MongoStore

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the auditlogs app (settings from the environment unless given)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def setup(resources: Resources) -> AsyncIterator[Services]:
        users = (
            HttpUseradmClient(resources.http, settings.useradm_addr)
            if settings.useradm_addr
            else None
        )
        yield Services(
            settings=settings,
            logs=AuditLogsApp(MongoStore(resources.db), users=users, retention=settings.retention),
        )

    return create_service_app(
        settings,
        name="auditlogs",
        internal_prefix=INTERNAL_PREFIX,
        routers=[management_router, internal_router],
        indexes=INDEXES,
        setup=setup,
    )
