"""Two deployments replicas on one database: each artifact job runs in exactly one of them.

What a crashed process leaves (generation jobs and direct uploads still processing, their
files in storage) is found by both replicas at start-up; the leases let one take each job.
A job another live process holds is left alone until its lease lapses."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from common.core.mongo import Document
from common.core.outbox import Outbox
from common.web.app import services_of
from services.deployments.api.deps import Services
from services.deployments.config import Settings
from services.deployments.main import create_app
from services.deployments.models import GenerateJob, UploadIntent
from services.deployments.storage import object_key
from services.deployments.storage.local import LocalStorage
from services.deployments.storage.signing import URLSigner
from services.deployments.store.mongo import MongoStore
from tests.conftest import ClientFactory
from tests.deployments.conftest import TEST_SECRET
from tests.deployments.helpers import ArtifactFactory, user_headers

ARTIFACTS = "/api/management/v1/deployments/artifacts"
TENANTS = ("t1", "t2")


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content


class _Leftovers:
    """Jobs and uploads as a process that died mid-way leaves them."""

    def __init__(self, settings: Settings, mongo: AsyncMongoClient[Document]) -> None:
        db = mongo[settings.mongo_db]
        self.store = MongoStore(db, outbox=Outbox(db, ()))
        self.storage = LocalStorage(settings.storage_path, URLSigner(TEST_SECRET))
        self.jobs: list[GenerateJob] = []
        self.intents: list[UploadIntent] = []

    async def job(self, tenant: str, **lease: Any) -> GenerateJob:
        job_id = str(uuid.uuid4())
        raw_key = object_key(tenant, f"{job_id}.raw")
        await self.storage.put_stream(raw_key, _one(b"left behind"), size_limit=1000)
        job = GenerateJob(
            id=job_id,
            tenant_id=tenant,
            state="processing",
            name=f"generated-{job_id}",
            device_types=["board-a"],
            filename="file.bin",
            dest_dir="/data",
            raw_key=raw_key,
            raw_size=11,
            created=datetime.now(UTC),
            **lease,
        )
        await self.store.insert_job(job)
        self.jobs.append(job)
        return job

    async def intent(self, tenant: str, artifact: bytes) -> UploadIntent:
        intent_id = str(uuid.uuid4())
        key = object_key(tenant, intent_id)
        await self.storage.put_stream(key, _one(artifact), size_limit=len(artifact))
        now = datetime.now(UTC)
        intent = UploadIntent(
            id=intent_id,
            tenant_id=tenant,
            key=key,
            state="processing",
            expire=now + timedelta(hours=1),
            created=now,
        )
        await self.store.insert_intent(intent)
        self.intents.append(intent)
        return intent


class TestTwoReplicas:
    async def test_each_job_runs_once(
        self,
        asgi_client: ClientFactory,
        settings: Settings,
        mongo: AsyncMongoClient[Document],
        artifacts_factory: ArtifactFactory,
    ) -> None:
        left = _Leftovers(settings, mongo)
        for n in range(8):
            await left.job(TENANTS[n % 2])
        for n in range(4):
            name = f"direct-{n}"
            await left.intent(TENANTS[n % 2], artifacts_factory.make(name))

        replicas = [create_app(settings), create_app(settings)]
        async with contextlib.AsyncExitStack() as stack:
            # Both start at once, as after a rollout or a crash of the whole node.
            client, _ = await asyncio.gather(
                *(stack.enter_async_context(asgi_client(app)) for app in replicas)
            )
            for app in replicas:
                await services_of(app, Services).tasks.wait_idle()
            listed = {
                tenant: await client.get(ARTIFACTS, headers=user_headers(tenant))
                for tenant in TENANTS
            }

        for job in left.jobs:
            done = await left.store.get_job(job.tenant_id, job.id)
            assert done is not None
            assert (done.state, done.error) == ("done", "")
            assert done.claims == 1, f"job {job.id} was taken up {done.claims} times"
            assert done.lease_until is None
        for intent in left.intents:
            processed = await left.store.get_intent(intent.tenant_id, intent.id)
            assert processed is not None
            assert (processed.state, processed.error) == ("done", "")
            assert processed.claims == 1, f"upload {intent.id} processed {processed.claims} times"
        for tenant in TENANTS:
            ids = sorted(a["id"] for a in listed[tenant].json())
            expected = [j.id for j in left.jobs if j.tenant_id == tenant]
            expected += [i.id for i in left.intents if i.tenant_id == tenant]
            assert ids == sorted(expected)
        assert list(settings.storage_path.rglob("*.raw")) == []

    async def test_a_job_a_live_process_holds_is_left_alone(
        self,
        asgi_client: ClientFactory,
        settings: Settings,
        mongo: AsyncMongoClient[Document],
    ) -> None:
        left = _Leftovers(settings, mongo)
        held = await left.job(
            "t1",
            lease_owner="a-live-replica",
            lease_until=datetime.now(UTC) + timedelta(hours=1),
            claims=1,
        )
        lapsed = await left.job(
            "t1",
            lease_owner="a-dead-replica",
            lease_until=datetime.now(UTC) - timedelta(seconds=1),
            claims=1,
        )
        app = create_app(settings)
        async with asgi_client(app):
            await services_of(app, Services).tasks.wait_idle()

        still = await left.store.get_job("t1", held.id)
        assert still is not None
        assert (still.state, still.lease_owner, still.claims) == ("processing", "a-live-replica", 1)
        assert (settings.storage_path / held.raw_key).exists()
        taken = await left.store.get_job("t1", lapsed.id)
        assert taken is not None
        assert (taken.state, taken.claims) == ("done", 2)
        assert taken.lease_owner == services_of(app, Services).generate._leases.owner

    async def test_complete_twice_processes_once(
        self,
        asgi_client: ClientFactory,
        settings: Settings,
        mongo: AsyncMongoClient[Document],
        artifacts_factory: ArtifactFactory,
    ) -> None:
        first, second = create_app(settings), create_app(settings)
        async with asgi_client(first) as one, asgi_client(second) as two:
            link = await one.post(f"{ARTIFACTS}/directupload", headers=user_headers("t1"))
            intent_id = link.json()["id"]
            key = object_key("t1", intent_id)
            storage = LocalStorage(settings.storage_path, URLSigner(TEST_SECRET))
            artifact = artifacts_factory.make("raced-1.0")
            await storage.put_stream(key, _one(artifact), size_limit=len(artifact))
            path = f"{ARTIFACTS}/directupload/{intent_id}/complete"
            answers = [await client.post(path, headers=user_headers("t1")) for client in (one, two)]
            for app in (first, second):
                await services_of(app, Services).tasks.wait_idle()
        assert [a.status_code for a in answers] == [202, 404]
        assert answers[1].json()["error"] == "not found"
        db = mongo[settings.mongo_db]
        intent = await MongoStore(db, outbox=Outbox(db, ())).get_intent("t1", intent_id)
        assert intent is not None
        assert (intent.state, intent.claims) == ("done", 1)
