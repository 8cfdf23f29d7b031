"""The deployments service app: `create_app(settings)`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final

from fastapi import FastAPI

from common.core.audit import AUDITLOGS
from common.core.leases import LeaseTerms
from common.core.outbox import Outbox, OutboxRelay
from common.web.app import Resources, create_service_app
from services.deployments.api.deps import Services
from services.deployments.api.devices import LEAN_ROUTES
from services.deployments.api.devices import PREFIX_V1 as DEVICES_V1
from services.deployments.api.devices import router as devices_router
from services.deployments.api.internal import PREFIX as INTERNAL_PREFIX
from services.deployments.api.internal import STREAM_PATH as INTERNAL_STREAM_PATH
from services.deployments.api.internal import router as internal_router
from services.deployments.api.management import PREFIX as MANAGEMENT_V1
from services.deployments.api.management import router as management_router
from services.deployments.api.management_v2 import router_v1alpha1, router_v2
from services.deployments.app.artifacts import ArtifactsApp
from services.deployments.app.deployments import DeploymentsApp
from services.deployments.app.device import DEVICE_LINK_EXPIRE, DeviceDeploymentsApp
from services.deployments.app.downloads import DownloadsApp
from services.deployments.app.jobs import DirectUploadsApp, GenerateApp, reclaim_periodically
from services.deployments.app.polltags import PollTags
from services.deployments.app.reach import Reach
from services.deployments.app.releases import ReleasesApp
from services.deployments.app.sweeper import StorageSweeper
from services.deployments.app.tasks import BackgroundTasks
from services.deployments.clients import Inventory, InventoryClient, NoInventory
from services.deployments.config import Settings
from services.deployments.storage import Storage
from services.deployments.storage.local import LocalStorage
from services.deployments.storage.s3 import S3Storage
from services.deployments.storage.signing import URLSigner
from services.deployments.store.indexes import INDEXES
from services.deployments.store.mongo import MongoStore

__all__ = ["create_app"]

_log = logging.getLogger("deployments")

# Bodies of these paths are streamed (artifact uploads and direct-upload PUTs) and limited
# by the routes themselves, not by the 1 MiB JSON limit.
STREAM_PATHS: Final = (
    MANAGEMENT_V1 + "/artifacts",
    MANAGEMENT_V1 + "/artifacts/generate",
    DEVICES_V1 + "/download/objects/.+",
    INTERNAL_STREAM_PATH,
)


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """Build the deployments app; resources are created by its lifespan.

    `clock` replaces the wall clock where a poll's entity tag is checked (tests).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def setup(resources: Resources) -> AsyncIterator[Services]:
        signer = URLSigner(settings.presign_secret)
        async with contextlib.AsyncExitStack() as stack:
            storage: Storage
            if settings.storage_default == "aws":
                storage = await stack.enter_async_context(
                    S3Storage(
                        endpoint_url=settings.aws_uri,
                        bucket=settings.aws_bucket,
                        region=settings.aws_region,
                        access_key_id=settings.aws_auth_key,
                        secret_access_key=settings.aws_auth_secret,
                        external_url=settings.aws_external_uri,
                        force_path_style=settings.aws_force_path_style,
                        create_bucket=settings.aws_create_bucket,
                    )
                )
            else:
                storage = LocalStorage(settings.storage_path, signer)
                await storage.health_check()
            relay = OutboxRelay(
                resources.db, resources.delivery, {AUDITLOGS: settings.auditlogs_addr}
            )
            store = MongoStore(resources.db, outbox=Outbox(resources.db, relay.deployed))
            await stack.enter_async_context(relay.running())
            inventory: Inventory = (
                InventoryClient(resources.http, settings.inventory_addr)
                if settings.inventory_addr
                else NoInventory()
            )
            tasks = BackgroundTasks()
            stack.push_async_callback(tasks.close)
            artifacts = ArtifactsApp(store, storage, max_image_size=settings.max_image_size)
            reach = Reach(store, max_devices=settings.poll_snapshot_max_devices)
            deployments = DeploymentsApp(store, inventory, reach)
            # A device's tag stands while its link has half its lifetime left.
            tags = PollTags(settings.presign_secret, fresh_for=DEVICE_LINK_EXPIRE / 2)
            device = DeviceDeploymentsApp(store, storage, signer, reach, tags, clock=clock)
            # One holder id for this process: its claims on artifact jobs.
            leases = LeaseTerms(duration=settings.job_lease)
            generate = GenerateApp(
                store,
                storage,
                artifacts,
                tasks,
                max_generate_size=settings.max_generate_size,
                leases=leases,
            )
            uploads = DirectUploadsApp(
                store,
                storage,
                artifacts,
                tasks,
                enabled=settings.enable_direct_upload,
                leases=leases,
            )
            services = Services(
                settings=settings,
                storage=storage,
                signer=signer,
                tasks=tasks,
                artifacts=artifacts,
                releases=ReleasesApp(store, artifacts),
                deployments=deployments,
                device=device,
                reach=reach,
                generate=generate,
                uploads=uploads,
                downloads=DownloadsApp(storage, signer, device, uploads),
            )
            resumed = await generate.reclaim() + await uploads.reclaim()
            if resumed:
                _log.info("resuming %d unfinished artifact jobs", resumed)
            # Upkeep runs beside the requests, apart from the artifact jobs in `tasks`.
            upkeep = BackgroundTasks()
            stack.push_async_callback(upkeep.close)
            upkeep.spawn(
                reclaim_periodically([generate, uploads], settings.job_lease.total_seconds()),
                name="reclaim-jobs",
            )
            upkeep.spawn(deployments.recount_unfinished(), name="recount-statistics")
            refreshing = reach.refresh_periodically(settings.poll_snapshot_refresh.total_seconds())
            upkeep.spawn(refreshing, name="refresh-active-deployments")
            sweeper = StorageSweeper(
                store,
                storage,
                partial_max_age=settings.storage_partial_max_age,
                orphan_max_age=settings.storage_orphan_max_age,
            )
            sweeping = sweeper.run(leases, interval=settings.storage_sweep_interval)
            upkeep.spawn(sweeping, name="storage-sweep")
            yield services

    return create_service_app(
        settings,
        name="deployments",
        internal_prefix=INTERNAL_PREFIX,
        routers=[devices_router, management_router, router_v2, router_v1alpha1, internal_router],
        indexes=INDEXES,
        setup=setup,
        stream_paths=STREAM_PATHS,
        lean_routes=LEAN_ROUTES,
    )
