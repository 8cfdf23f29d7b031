"""The useradm application: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from common.core.audit import AUDITLOGS
from common.core.outbox import Outbox, OutboxRelay
from common.core.revocations import revocation_feed
from common.web.app import Resources, create_service_app
from common.web.tokenissuer import TokenIssuer, TokenUse
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
        relay = OutboxRelay(res.db, res.delivery, {AUDITLOGS: config.auditlogs_addr})
        hasher = PasswordHasher(cost=config.bcrypt_cost)
        policy = TokenPolicy(
            issuer=config.jwt_issuer,
            expiration=timedelta(seconds=config.jwt_exp_timeout),
            sessions_per_user=config.limit_sessions_per_user,
            tokens_per_user=config.limit_tokens_per_user,
        )
        async with (
            relay.running(),
            revocation_feed(res.db, issuer=SERVICE_NAME, nats_uri=config.nats_uri) as feed,
        ):
            store = MongoStore(
                res.mongo, res.db, outbox=Outbox(res.db, relay.deployed), revocations=feed
            )
            auth = AuthApp(store, hasher, keys, policy)

            async def used(uses: Sequence[TokenUse]) -> None:
                await auth.record_use((use.tenant_id, use.jti) for use in uses)

            yield Services(
                settings=config,
                users=UsersApp(store, hasher),
                auth=auth,
                user_settings=SettingsApp(store),
                plans=PlansApp(),
                issuer=TokenIssuer(keys=keys.verifying_keys(), feed=feed, record_use=used),
            )

    return create_service_app(
        config,
        name=SERVICE_NAME,
        internal_prefix=INTERNAL_PREFIX,
        routers=[management_v1, management_v2, tenantadm_router, internal_router],
        indexes=INDEXES,
        setup=setup,
    )
