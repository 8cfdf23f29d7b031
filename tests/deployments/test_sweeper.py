"""The storage sweep on real storage (local disk, S3) and the real database: exactly the stale
partial uploads and the old objects nothing refers to go."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from common.core.leases import LeaseTerms
from services.deployments.app.artifacts import ArtifactsApp
from services.deployments.app.sweeper import StorageSweeper
from services.deployments.config import Settings
from services.deployments.main import create_app
from services.deployments.models import GenerateJob, UploadIntent
from services.deployments.storage import Storage, object_key
from services.deployments.storage.local import LocalStorage
from services.deployments.storage.s3 import S3Storage
from services.deployments.storage.signing import URLSigner
from services.deployments.store.mongo import MongoStore
from tests.conftest import ClientFactory
from tests.deployments.helpers import ArtifactFactory
from tests.deployments.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedS3
from tests.toolkit import eventually

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

HOUR: Final = timedelta(hours=1)


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _new_key(tenant: str, suffix: str = "") -> str:
    return object_key(tenant, f"{uuid.uuid4()}{suffix}")


async def _populate(
    store: MongoStore, storage: Storage, artifacts_factory: ArtifactFactory
) -> tuple[set[str], set[str]]:
    """Store what a sweep must keep and what it must remove: (kept, orphans) keys."""
    artifacts = ArtifactsApp(store, storage, max_image_size=10 * 1024 * 1024)
    content = artifacts_factory.make("swept-1.0")
    kept = set()
    for tenant in ("", "t1"):
        artifact = await artifacts.upload(tenant, chunks=_bytes(content))
        kept.add(object_key(tenant, artifact.id))
    now = datetime.now(UTC)
    # A generation job not done yet holds its uploaded file; a finished one's is left over.
    raw_keys: dict[str, str] = {}
    for state in ("pending", "done"):
        job_id = str(uuid.uuid4())
        job = GenerateJob(
            id=job_id,
            tenant_id="",
            state=state,
            name="generated",
            device_types=["t"],
            filename="f",
            dest_dir="/d",
            raw_key=object_key("", f"{job_id}.raw"),
            raw_size=3,
            created=now,
        )
        await store.insert_job(job)
        await storage.put_stream(job.raw_key, _bytes(b"raw"), size_limit=10)
        raw_keys[state] = job.raw_key
    # A direct upload not completed yet holds its object.
    intent_id = str(uuid.uuid4())
    intent = UploadIntent(
        id=intent_id, tenant_id="t1", key=object_key("t1", intent_id), expire=now, created=now
    )
    await store.insert_intent(intent)
    await storage.put_stream(intent.key, _bytes(b"uploaded"), size_limit=10)
    # Not a key this service writes: never touched.
    await storage.put_stream("notes", _bytes(b"hands off"), size_limit=10)
    kept |= {raw_keys["pending"], intent.key, "notes"}
    # What crashes leave: files whose artifact was never recorded, or was deleted.
    orphans = {_new_key(""), _new_key("t2"), _new_key("", ".raw")}
    for key in orphans:
        await storage.put_stream(key, _bytes(b"orphan"), size_limit=10)
    return kept, orphans | {raw_keys["done"]}


async def _keys(storage: Storage) -> set[str]:
    return {item.key async for item in storage.list_objects()}


def _age(root: Path, keys: Iterable[str], by: timedelta) -> None:
    when = (datetime.now(UTC) - by).timestamp()
    for key in keys:
        os.utime(root / key, (when, when))


class TestLocal:
    async def test_removes_exactly_stale_partials_and_old_orphans(
        self, store: MongoStore, tmp_path: Path, artifacts_factory: ArtifactFactory
    ) -> None:
        storage = LocalStorage(tmp_path / "objects", URLSigner("secret"))
        kept, orphans = await _populate(store, storage, artifacts_factory)
        _age(storage.root, kept | orphans, 2 * HOUR)
        young = _new_key("")
        await storage.put_stream(young, _bytes(b"recording"), size_limit=10)
        partials = storage.root / ".partial"
        (partials / "cut.part").write_bytes(b"cut off mid-upload")
        _age(partials, ["cut.part"], 2 * HOUR)
        (partials / "live.part").write_bytes(b"being written")

        sweeper = StorageSweeper(store, storage, partial_max_age=HOUR, orphan_max_age=HOUR)
        removed = await sweeper.sweep()

        assert {r.key for r in removed} == orphans | {".partial/cut.part"}
        assert await _keys(storage) == kept | {young}
        assert [p.name for p in partials.iterdir()] == ["live.part"]
        # Sweeping again, or another replica at the same time, removes nothing more.
        assert await sweeper.sweep() == []


class TestS3:
    async def test_removes_exactly_stale_partials_and_old_orphans(
        self,
        store: MongoStore,
        s3_server: SeaweedS3,
        s3: S3Client,
        artifacts_factory: ArtifactFactory,
    ) -> None:
        bucket = f"fleetport-sweep-{uuid.uuid4().hex[:12]}"
        async with S3Storage(
            endpoint_url=s3_server.endpoint,
            bucket=bucket,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            create_bucket=True,
        ) as storage:
            kept, orphans = await _populate(store, storage, artifacts_factory)
            cut = await s3.create_multipart_upload(Bucket=bucket, Key="t1/cut")
            await s3.upload_part(
                Bucket=bucket, Key="t1/cut", UploadId=cut["UploadId"], PartNumber=1, Body=b"x"
            )
            # Everything is seconds old: with an hour's margin nothing goes.
            patient = StorageSweeper(store, storage, partial_max_age=HOUR, orphan_max_age=HOUR)
            assert await patient.sweep() == []
            assert await _keys(storage) == kept | orphans
            # With none, the orphans and the cut upload go.
            now = timedelta(microseconds=1)
            eager = StorageSweeper(store, storage, partial_max_age=now, orphan_max_age=now)
            removed = await eager.sweep()
            assert {r.key for r in removed} == orphans | {"t1/cut"}
            assert await _keys(storage) == kept
            uploads = await s3.list_multipart_uploads(Bucket=bucket)
            assert uploads.get("Uploads", []) == []
            assert await eager.sweep() == []


class TestService:
    async def test_sweeps_at_start_and_then_periodically(
        self, settings: Settings, asgi_client: ClientFactory
    ) -> None:
        root = settings.storage_path
        partials = root / ".partial"
        partials.mkdir(parents=True)
        (partials / "cut.part").write_bytes(b"x" * 1000)
        _age(partials, ["cut.part"], 2 * HOUR)
        orphan, young, later = _new_key(""), _new_key(""), _new_key("")
        for key in (orphan, young):
            (root / key).write_bytes(b"orphan")
        _age(root, [orphan], 2 * HOUR)
        often = settings.model_copy(update={"storage_sweep_interval": timedelta(seconds=0.1)})
        async with asgi_client(create_app(often)):
            await eventually(lambda: not (root / orphan).exists())
            await eventually(lambda: not (partials / "cut.part").exists())
            assert (root / young).exists()
            # Left behind later, found by a later sweep.
            (root / later).write_bytes(b"orphan")
            _age(root, [later], 2 * HOUR)
            await eventually(lambda: not (root / later).exists())
            assert (root / young).exists()


class TestOneReplicaAtATime:
    async def test_the_lease_holder_sweeps_and_the_others_wait_until_it_lapses(
        self, store: MongoStore, tmp_path: Path
    ) -> None:
        storage = LocalStorage(tmp_path / "objects", URLSigner("secret"))
        sweeper = StorageSweeper(store, storage, partial_max_age=HOUR, orphan_max_age=HOUR)
        first, second = LeaseTerms(), LeaseTerms()
        orphan = _new_key("")
        await storage.put_stream(orphan, _bytes(b"orphan"), size_limit=10)
        _age(storage.root, [orphan], 2 * HOUR)

        assert await sweeper.turn(first, interval=HOUR)
        assert await _keys(storage) == set()
        # The holder keeps its turn; the other replica does not sweep meanwhile.
        again = _new_key("")
        await storage.put_stream(again, _bytes(b"orphan"), size_limit=10)
        _age(storage.root, [again], 2 * HOUR)
        assert not await sweeper.turn(second, interval=HOUR)
        assert await _keys(storage) == {again}
        assert await sweeper.turn(first, interval=HOUR)
        assert await _keys(storage) == set()

        # The holder is gone: once its lease lapses, the other replica takes the turn.
        assert await sweeper.turn(first, interval=timedelta(microseconds=1))
        lapsed = _new_key("")
        await storage.put_stream(lapsed, _bytes(b"orphan"), size_limit=10)
        _age(storage.root, [lapsed], 2 * HOUR)
        assert await sweeper.turn(second, interval=HOUR)
        assert await _keys(storage) == set()
        assert not await sweeper.turn(first, interval=HOUR)
