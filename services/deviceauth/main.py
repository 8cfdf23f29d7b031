"""The deviceauth application: `create_app(settings)`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from common.core.outbox import Outbox, OutboxRelay
from common.core.revocations import recorded_sequence, revocation_feed
from common.core.tokens import SigningKey, TokenVerifier, load_signing_key
from common.web.app import Resources, create_service_app
from common.web.tokenissuer import TokenIssuer, TokenUse
from services.deviceauth.api import devices_router, internal_router, management_router
from services.deviceauth.api.deps import Services
from services.deviceauth.api.internal import PREFIX as INTERNAL_PREFIX
from services.deviceauth.app import Admission, Clock, DevAuthApp, DeviceAuthApp
from services.deviceauth.config import Settings
from services.deviceauth.store.indexes import INDEXES
from services.deviceauth.store.mongo import MongoStore

__all__ = ["create_app"]

_log = logging.getLogger("deviceauth")
NAME: Final = "deviceauth"


def _signing_key(settings: Settings) -> SigningKey:
    if settings.server_priv_key_path is not None:
        return load_signing_key(settings.server_priv_key_path)
    # Only reachable in development mode (the settings refuse it otherwise).
    _log.warning("no server_priv_key_path: device tokens are signed with a temporary key")
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the deviceauth app; `clock` replaces the wall clock (tests)."""
    config = settings or Settings()

    @asynccontextmanager
    async def setup(res: Resources) -> AsyncIterator[Services]:
        signer = _signing_key(config)
        keys = [signer]
        if config.server_fallback_priv_key_path is not None:
            keys.append(load_signing_key(config.server_fallback_priv_key_path))
        relay = OutboxRelay(
            res.db,
            res.delivery,
            config.peers(),
            poll_interval=config.outbox_poll_interval,
            concurrency=config.outbox_concurrency,
        )
        async with (
            relay.running(),
            revocation_feed(res.db, issuer=NAME, nats_uri=config.nats_uri) as feed,
        ):

            def wake() -> None:
                relay.wake()
                # Only a change that revoked tokens has anything for the feed to read now
                # (it looks by itself every quarter second): most wakes, one per
                # authentication, would otherwise each cost it a query.
                if recorded_sequence() is not None:
                    feed.wake()

            store = MongoStore(
                res.mongo,
                res.db,
                outbox=Outbox(res.db, relay.deployed),
                revocations=feed,
                clock=clock,
            )
            admission = Admission(
                store, default_max_devices=config.max_devices, wake=wake, clock=clock
            )
            device_auth = DeviceAuthApp(
                store,
                admission,
                signer=signer,
                verifier=TokenVerifier(keys),
                issuer=config.jwt_issuer,
                token_lifetime=timedelta(seconds=config.jwt_exp_timeout),
            )

            async def checked_in(uses: Sequence[TokenUse]) -> None:
                await device_auth.check_in((use.tenant_id, use.sub) for use in uses)

            yield Services(
                settings=config,
                devauth=DevAuthApp(store, admission),
                device_auth=device_auth,
                issuer=TokenIssuer(
                    keys=tuple(k.verifying() for k in keys), feed=feed, record_use=checked_in
                ),
            )

    return create_service_app(
        config,
        name=NAME,
        internal_prefix=INTERNAL_PREFIX,
        routers=[devices_router, management_router, internal_router],
        indexes=INDEXES,
        setup=setup,
    )
