"""The iot-manager app: `create_app(settings)`."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Final

from fastapi import FastAPI

from common.core.audit import AUDITLOGS
from common.core.outbox import Outbox, OutboxRelay
from common.web.app import Resources, create_service_app
from services.iot_manager.api import internal_router, management_router
from services.iot_manager.api.deps import Services
from services.iot_manager.api.internal import PREFIX as INTERNAL_PREFIX
from services.iot_manager.app import DELIVERIES, EventsApp, IntegrationsApp
from services.iot_manager.clients import (
    Clouds,
    IoTCore,
    IoTHub,
    OutboundClient,
    WebhookClient,
    proxies_from,
)
from services.iot_manager.config import Settings
from services.iot_manager.store.indexes import INDEXES
from services.iot_manager.store.mongo import MongoStore
from services.iot_manager.store.secrets import SecretBox

__all__ = ["create_app"]

_log = logging.getLogger("iot-manager")
NAME: Final = "iot-manager"


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    if settings.ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(settings.ca_file))


def create_app(
    settings: Settings | None = None, *, environ: Mapping[str, str] | None = None
) -> FastAPI:
    """Build the iot-manager app; proxies come from `environ` (default: the process's)."""
    config = settings or Settings()
    proxies = proxies_from(os.environ if environ is None else environ)

    @asynccontextmanager
    async def setup(res: Resources) -> AsyncIterator[Services]:
        if not config.aes_encryption_key:
            _log.warning("no aes_encryption_key: credentials are stored with the development key")
        outbound = OutboundClient(
            timeout=config.webhooks_timeout_seconds,
            allow_private=config.domain_skipverify,
            verify=_verify(config),
            proxies=proxies,
        )
        audit_peer = {AUDITLOGS: config.auditlogs_addr} if config.auditlogs_addr else {}
        store = MongoStore(
            res.mongo,
            res.db,
            SecretBox(*config.encryption_keys()),
            # Deliveries go through the relay's sender, audit events to auditlogs (below).
            outbox=Outbox(res.db, {DELIVERIES, *audit_peer}),
        )
        clouds = Clouds(
            IoTHub(outbound),
            IoTCore(endpoint_url=config.aws_endpoint_url, timeout=config.webhooks_timeout_seconds),
        )
        events = EventsApp(
            store,
            webhooks=WebhookClient(outbound),
            clouds=clouds,
            event_lifetime=timedelta(seconds=config.event_exp_timeout),
            wake=lambda: relay.wake(),  # the relay, made below, delivers what is recorded
        )
        relay = OutboxRelay(
            res.db,
            res.delivery,
            audit_peer,
            senders={DELIVERIES: events.deliver},
            poll_interval=config.outbox_poll_interval,
            max_backoff=config.retry_max_backoff,
        )
        services = Services(
            settings=config,
            integrations=IntegrationsApp(
                store,
                outbound=outbound,
                clouds=clouds,
                trusted_hosts=config.trusted_hosts(),
                notify=relay.wake,
            ),
            events=events,
        )
        try:
            async with relay.running():
                yield services
        finally:
            await outbound.aclose()

    return create_service_app(
        config,
        name=NAME,
        internal_prefix=INTERNAL_PREFIX,
        routers=[management_router, internal_router],
        indexes=INDEXES,
        setup=setup,
    )
