"""The useradm application: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from common.core.audit import AUDITLOGS
from common.core.outbox import Outbox, OutboxRelay
from common.web.app import Resources, create_service_app
from services.useradm.api import internal_router, management_v1, management_v2, tenantadm_router
from services.useradm.api.deps import Services
from services.useradm.api.internal import PREFIX as INTERNAL_PREFIX
from services.useradm.app import (
    AuthApp,
    PasswordHasher,
    PlansApp,
    SettingsApp,
    TokenPolicy,
    UsersApp,
    load_key_ring,
)
from services.useradm.config import SERVICE_NAME, Settings
from services.useradm.store.indexes import INDEXES
from services.useradm.store.mongo import MongoStore

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the useradm app (settings from the environment unless given)."""
    config = settings or Settings()

    @asynccontextmanager
    async def setup(res: Resources) -> AsyncIterator[Services]:
        keys = load_key_ring(
            config.server_priv_key_path, fallback=config.server_fallback_priv_key_path
        )
        relay = OutboxRelay(res.db, res.http, {AUDITLOGS: config.auditlogs_addr})
        store = MongoStore(res.mongo, res.db, outbox=Outbox(res.db, relay.deployed))
        hasher = PasswordHasher(cost=config.bcrypt_cost)
        policy = TokenPolicy(
            issuer=config.jwt_issuer,
            expiration=timedelta(seconds=config.jwt_exp_timeout),
            sessions_per_user=config.limit_sessions_per_user,
            tokens_per_user=config.limit_tokens_per_user,
        )
        async with relay.running():
            yield Services(
                settings=config,
                users=UsersApp(store, hasher),
                auth=AuthApp(store, hasher, keys, policy),
                user_settings=SettingsApp(store),
                plans=PlansApp(),
            )

    return create_service_app(
        config,
        name=SERVICE_NAME,
        internal_prefix=INTERNAL_PREFIX,
        routers=[management_v1, management_v2, tenantadm_router, internal_router],
        indexes=INDEXES,
        setup=setup,
    )
