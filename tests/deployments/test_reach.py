"""Idle polls answered from memory: what a replica knows of the active deployments."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pymongo import AsyncMongoClient

from common.core.mongo import Document
from common.core.outbox import Outbox
from services.deployments.app.reach import Reach
from services.deployments.config import Settings
from services.deployments.main import create_app
from services.deployments.store.mongo import MongoStore
from tests.conftest import ClientFactory
from tests.deployments.conftest import Service
from tests.deployments.flows import create_deployment, poll, report
from tests.deployments.helpers import ArtifactFactory
from tests.toolkit import eventually


class TestOneReplica:
    async def test_a_new_deployment_is_seen_by_the_next_poll(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        reach = service.services.reach
        assert (await poll(service.client, "dev")).status_code == 204
        assert (await poll(service.client, "dev")).status_code == 204
        assert reach.hits == 2

        deployment_id = await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["dev"]
        )
        response = await poll(service.client, "dev")
        assert response.status_code == 200
        assert response.json()["id"] == deployment_id
        # Listed devices go to the database; others are still answered from memory.
        assert (await poll(service.client, "other")).status_code == 204
        assert reach.hits == 3

        # Finished: the stale snapshot still sends the device to the database, which says
        # there is nothing more; the refresh then drops it.
        for status in ("downloading", "installing", "success"):
            assert (await report(service.client, "dev", deployment_id, status)).status_code == 204
        assert (await poll(service.client, "dev")).status_code == 204
        assert reach.hits == 3
        await reach.refresh()
        assert (await poll(service.client, "dev")).status_code == 204
        assert reach.hits == 4

    async def test_tenants_have_their_own_snapshot(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"), tenant="t1")
        reach = service.services.reach
        assert (await poll(service.client, "dev", tenant="t2")).status_code == 204
        deployment_id = await create_deployment(
            service.client, tenant="t1", name="x", artifact_name="app-2.0", devices=["dev"]
        )
        # Another tenant's deployment changes nothing for t2's devices.
        assert (await poll(service.client, "dev", tenant="t2")).status_code == 204
        assert reach.hits == 2
        response = await poll(service.client, "dev", tenant="t1")
        assert response.json()["id"] == deployment_id

    async def test_a_snapshot_too_large_leaves_polls_to_the_database(
        self, store: MongoStore, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        await create_deployment(
            service.client, name="x", artifact_name="app-2.0", devices=["a", "b", "c"]
        )
        reach = Reach(store, max_devices=2)
        assert not await reach.unreachable("", "z")
        assert reach.hits == 0
        roomy = Reach(store, max_devices=3)
        assert await roomy.unreachable("", "z")
        assert not await roomy.unreachable("", "a")

    async def test_a_deployment_created_during_a_load_is_not_lost(
        self,
        mongo: AsyncMongoClient[Document],
        settings: Settings,
        service: Service,
        artifacts_factory: ArtifactFactory,
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        loading, release = asyncio.Event(), asyncio.Event()

        class SlowStore(MongoStore):
            async def active_device_lists(self, tenant_id: str) -> dict[str, list[str]]:
                lists = await super().active_device_lists(tenant_id)
                loading.set()
                await release.wait()
                return lists

        db = mongo[settings.mongo_db]
        reach = Reach(SlowStore(db, outbox=Outbox(db, ())), max_devices=10)
        first = asyncio.create_task(reach.unreachable("", "dev"))
        await loading.wait()
        await create_deployment(service.client, name="x", artifact_name="app-2.0", devices=["dev"])
        reach.forget("")
        release.set()
        # The load read the database before the deployment: its answer is not kept.
        assert await first
        assert not await reach.unreachable("", "dev")


class TestReplicas:
    async def test_a_deployment_created_elsewhere_is_seen_within_the_refresh(
        self,
        asgi_client: ClientFactory,
        settings: Settings,
        artifacts_factory: ArtifactFactory,
    ) -> None:
        quick = settings.model_copy(update={"poll_snapshot_refresh": timedelta(seconds=0.2)})
        app_a = create_app(quick)
        async with asgi_client(app_a) as a, asgi_client(create_app(quick)) as b:
            await Service(app_a, a, quick).upload(artifacts_factory.make("app-2.0"))
            assert (await poll(b, "dev")).status_code == 204
            deployment_id = await create_deployment(
                a, name="x", artifact_name="app-2.0", devices=["dev"]
            )

            async def started() -> str | None:
                response = await poll(b, "dev")
                return response.json()["id"] if response.status_code == 200 else None

            assert await eventually(started, within=5.0, what="replica b sees it") == deployment_id
