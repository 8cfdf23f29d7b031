"""Background artifact work with persistent records: generation and direct uploads.

Each job is recorded before its work starts and marked `done` or `failed` at the end. A
process runs a job only once it has claimed it with a lease (`common.core.leases`), renewed
while it runs, so that two replicas never run one job; a job whose holder died (its lease
lapsed) is claimed and run again by whichever replica looks first (`reclaim`, at start-up and
then periodically). Even then a repeat is harmless: the artifact id is fixed by the job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from common.core.audit import Actor
from common.core.errors import BadRequest, NotFound, ServiceError, UnprocessableEntity
from common.core.leases import LeaseTerms, renewing
from services.deployments.app.artifacts import MAX_DESCRIPTION, ArtifactsApp, parse_uuid
from services.deployments.app.errors import ArtifactTooLarge
from services.deployments.app.tasks import BackgroundTasks
from services.deployments.artifact import PAYLOAD_FILE_NAME, write_single_file_artifact
from services.deployments.models import GenerateJob, JobState, UploadIntent
from services.deployments.storage import (
    Link,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    StorageError,
    object_key,
)
from services.deployments.store import DataStore

__all__ = [
    "GENERATE_TYPES",
    "UPLOAD_LINK_EXPIRE",
    "DirectUploadsApp",
    "GenerateApp",
    "reclaim_periodically",
]

_log = logging.getLogger("deployments.jobs")

GENERATE_TYPES: Final = frozenset({"single_file"})
UPLOAD_LINK_EXPIRE: Final = timedelta(hours=1)
_MAX_FIELD: Final = 256
_RESERVED_FILES: Final = frozenset({"dest_dir", "filename", "permissions"})
_READ_CHUNK: Final = 256 * 1024


def _actor(user_id: str | None) -> Actor | None:
    """The user a job or an upload was submitted by (none: recorded before users were)."""
    return Actor.user(user_id) if user_id else None


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, _READ_CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def _download(chunks: AsyncIterable[bytes], path: Path) -> None:
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in chunks:
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)


def _parse_args(raw: str, filename_hint: str) -> tuple[str, str, str]:
    try:
        args: Any = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise BadRequest("api: invalid form parameters: args: must be a JSON object") from None
    if not isinstance(args, dict):
        raise BadRequest("api: invalid form parameters: args: must be a JSON object")
    filename = args.get("filename") or filename_hint
    dest_dir = args.get("dest_dir")
    permissions = args.get("permissions", "644")
    if not isinstance(filename, str) or not PAYLOAD_FILE_NAME.fullmatch(filename):
        raise BadRequest(
            "api: invalid form parameters: args.filename: letters, digits and . , _ - only"
        )
    if filename in _RESERVED_FILES:
        raise BadRequest(f"api: invalid form parameters: args.filename: {filename!r} is reserved")
    if (
        not isinstance(dest_dir, str)
        or not dest_dir.startswith("/")
        or "\n" in dest_dir
        or len(dest_dir) > 4096
    ):
        raise BadRequest(
            "api: invalid form parameters: args.dest_dir: an absolute directory is required"
        )
    if not isinstance(permissions, str) or not (
        3 <= len(permissions) <= 4 and all(c in "01234567" for c in permissions)
    ):
        raise BadRequest("api: invalid form parameters: args.permissions: octal mode expected")
    return filename, dest_dir, permissions


class GenerateApp:
    """`POST /artifacts/generate`: a single-file artifact built here from an uploaded file."""

    def __init__(
        self,
        store: DataStore,
        storage: Storage,
        artifacts: ArtifactsApp,
        tasks: BackgroundTasks,
        *,
        max_generate_size: int,
        leases: LeaseTerms,
    ) -> None:
        self._store = store
        self._storage = storage
        self._artifacts = artifacts
        self._tasks = tasks
        self._max_size = max_generate_size
        self._leases = leases

    async def submit(
        self,
        tenant_id: str,
        *,
        name: str,
        description: str,
        device_types: list[str],
        type_: str,
        args: str,
        filename_hint: str,
        chunks: AsyncIterable[bytes],
        declared_size: int | None = None,
        user_id: str | None = None,
    ) -> GenerateJob:
        """Validate the request, store the file and queue the generation; returns the job."""
        if not name or len(name) > _MAX_FIELD:
            raise BadRequest("api: invalid form parameters: name: the length must be 1 to 256")
        if len(description) > MAX_DESCRIPTION:
            raise BadRequest("api: invalid form parameters: description: too long")
        if not device_types or len(device_types) > _MAX_FIELD:
            raise BadRequest(
                "api: invalid form parameters: device_types_compatible: cannot be blank"
            )
        if any(not t or len(t) > _MAX_FIELD for t in device_types):
            raise BadRequest(
                "api: invalid form parameters: device_types_compatible: "
                "each device type must have 1 to 256 characters"
            )
        if not type_:
            raise BadRequest("api: invalid form parameters: type: cannot be blank")
        if type_ not in GENERATE_TYPES:
            raise BadRequest(f"api: invalid form parameters: type: {type_!r} is not supported")
        if declared_size is not None and declared_size > self._max_size:
            raise ArtifactTooLarge()
        filename, dest_dir, permissions = _parse_args(args, filename_hint)
        for existing in await self._store.artifacts_named(tenant_id, [name]):
            if set(existing.meta.device_types_compatible) & set(device_types):
                raise UnprocessableEntity("Artifact not unique")

        job_id = str(uuid.uuid4())
        raw_key = object_key(tenant_id, f"{job_id}.raw")
        try:
            size = await self._storage.put_stream(raw_key, chunks, size_limit=self._max_size)
        except ObjectTooLarge:
            raise ArtifactTooLarge() from None
        job = GenerateJob(
            id=job_id,
            tenant_id=tenant_id,
            name=name,
            description=description,
            device_types=list(dict.fromkeys(device_types)),
            filename=filename,
            dest_dir=dest_dir,
            permissions=permissions,
            raw_key=raw_key,
            raw_size=size,
            created=datetime.now(UTC),
            user_id=user_id,
        )
        try:
            await self._store.insert_job(job)
        except BaseException:
            await self._storage.delete(raw_key)
            raise
        self._tasks.spawn(self.take(tenant_id, job_id), name=f"generate-{job_id}")
        return job

    async def take(self, tenant_id: str, job_id: str) -> None:
        """Claim a job and run it, unless another process holds it or it is over."""
        job = await self._store.claim_job(
            tenant_id,
            job_id,
            owner=self._leases.owner,
            now=datetime.now(UTC),
            until=self._leases.until(),
        )
        if job is None:
            return

        async def renew(until: datetime) -> bool:
            return await self._store.renew_job(
                tenant_id, job_id, owner=self._leases.owner, until=until
            )

        async with renewing(renew, self._leases, what=f"generation job {job_id}"):
            await self._run(job)

    async def _run(self, job: GenerateJob) -> None:
        """Build the artifact, ingest it like an upload and record the outcome."""
        tenant_id = job.tenant_id
        if await self._store.get_artifact(tenant_id, job.id) is not None:
            await self._finish(job, "done")
            return
        try:
            with tempfile.TemporaryDirectory(prefix="fleetport-generate-") as tmp:
                payload = Path(tmp) / "payload"
                artifact_path = Path(tmp) / "artifact.mender"
                await _download(self._storage.open_stream(job.raw_key), payload)

                def _write() -> None:
                    with artifact_path.open("wb") as out:
                        write_single_file_artifact(
                            out,
                            name=job.name,
                            device_types=job.device_types,
                            source=payload,
                            filename=job.filename,
                            dest_dir=job.dest_dir,
                            permissions=job.permissions,
                        )

                await asyncio.to_thread(_write)
                await self._artifacts.ingest(
                    tenant_id,
                    artifact_id=job.id,
                    chunks=_file_chunks(artifact_path),
                    description=job.description,
                    actor=_actor(job.user_id),
                    action="generate",
                )
        except ServiceError as exc:
            await self._finish(job, "failed", exc.message)
        except ObjectNotFound:
            await self._finish(job, "failed", "the uploaded file is missing")
        except (OSError, ValueError, StorageError) as exc:
            _log.exception("generating artifact %s failed", job.id)
            await self._finish(job, "failed", str(exc))
        else:
            await self._finish(job, "done")

    async def _finish(self, job: GenerateJob, state: str, error: str = "") -> None:
        held = await self._store.finish_job(
            job.tenant_id,
            job.id,
            "done" if state == "done" else "failed",
            owner=self._leases.owner,
            error=error,
        )
        if not held:  # its new holder finishes it, and removes the file then
            _log.warning("generation job %s was taken over before it ended", job.id)
            return
        try:
            await self._storage.delete(job.raw_key)
        except StorageError:
            _log.exception("could not remove %s", job.raw_key)

    async def reclaim(self) -> int:
        """Take up the unfinished jobs nobody holds (their process died); returns how many
        were found (another replica may claim some first)."""
        found = await self._store.claimable_jobs(datetime.now(UTC))
        for tenant_id, job_id in found:
            self._tasks.spawn(self.take(tenant_id, job_id), name=f"generate-{job_id}")
        return len(found)


def split_object_key(key: str) -> tuple[str, str]:
    """(tenant, object id) of an artifact key (`<tenant>/<id>` or `<id>`)."""
    parts = key.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise NotFound("upload not found")


class DirectUploadsApp:
    """Direct uploads: a signed PUT link, then `complete` parses and records the artifact."""

    def __init__(
        self,
        store: DataStore,
        storage: Storage,
        artifacts: ArtifactsApp,
        tasks: BackgroundTasks,
        *,
        enabled: bool,
        leases: LeaseTerms,
    ) -> None:
        self._store = store
        self._storage = storage
        self._artifacts = artifacts
        self._tasks = tasks
        self._enabled = enabled
        self._leases = leases

    async def request_link(
        self, tenant_id: str, *, external_url: str, user_id: str | None = None
    ) -> tuple[str, Link]:
        """Record an upload intent and return its id and PUT link (valid for one hour)."""
        if not self._enabled:
            raise NotFound("direct upload is not enabled")
        intent_id = str(uuid.uuid4())
        key = object_key(tenant_id, intent_id)
        link = await self._storage.upload_link(
            key, expire=UPLOAD_LINK_EXPIRE, external_url=external_url
        )
        now = datetime.now(UTC)
        await self._store.insert_intent(
            UploadIntent(
                id=intent_id,
                tenant_id=tenant_id,
                key=key,
                expire=link.expire,
                created=now,
                user_id=user_id,
            )
        )
        return intent_id, link

    async def receive(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the body of a signed PUT for a pending intent; returns its size."""
        tenant_id, intent_id = split_object_key(key)
        try:
            intent_id = parse_uuid(intent_id)
        except BadRequest:
            raise NotFound("upload not found") from None
        intent = await self._store.get_intent(tenant_id, intent_id)
        if intent is None or intent.state != "pending" or intent.key != key:
            raise NotFound("upload not found")
        try:
            return await self._storage.put_stream(
                key, chunks, size_limit=self._artifacts.max_image_size
            )
        except ObjectTooLarge:
            raise ArtifactTooLarge() from None

    async def complete(self, tenant_id: str, intent_id: str) -> None:
        """Start processing an uploaded artifact (202); 404 without a pending intent."""
        if not self._enabled:
            raise NotFound("direct upload is not enabled")
        try:
            intent_id = str(uuid.UUID(intent_id))
        except ValueError:
            raise NotFound("not found") from None
        intent = await self._claim(tenant_id, intent_id, "pending")
        if intent is None:
            raise NotFound("not found")
        self._tasks.spawn(self._held(intent), name=f"upload-{intent_id}")

    async def _claim(self, tenant_id: str, intent_id: str, state: JobState) -> UploadIntent | None:
        return await self._store.claim_intent(
            tenant_id,
            intent_id,
            from_state=state,
            owner=self._leases.owner,
            now=datetime.now(UTC),
            until=self._leases.until(),
        )

    async def take(self, tenant_id: str, intent_id: str) -> None:
        """Claim an intent left processing by a process that died, and process it."""
        intent = await self._claim(tenant_id, intent_id, "processing")
        if intent is not None:
            await self._held(intent)

    async def _held(self, intent: UploadIntent) -> None:
        async def renew(until: datetime) -> bool:
            return await self._store.renew_intent(
                intent.tenant_id, intent.id, owner=self._leases.owner, until=until
            )

        async with renewing(renew, self._leases, what=f"direct upload {intent.id}"):
            await self._process(intent)

    async def _finish(self, intent: UploadIntent, state: JobState, error: str = "") -> None:
        held = await self._store.finish_intent(
            intent.tenant_id, intent.id, state, owner=self._leases.owner, error=error
        )
        if not held:
            _log.warning("direct upload %s was taken over before it ended", intent.id)

    async def _process(self, intent: UploadIntent) -> None:
        """Parse the uploaded object and record the artifact (or drop the object)."""
        tenant_id = intent.tenant_id
        if await self._store.get_artifact(tenant_id, intent.id) is not None:
            await self._finish(intent, "done")
            return
        try:
            await self._storage.size(intent.key)
            await self._artifacts.ingest(
                tenant_id,
                artifact_id=intent.id,
                chunks=self._storage.open_stream(intent.key),
                already_stored=True,
                actor=_actor(intent.user_id),
            )
        except ServiceError as exc:
            await self._finish(intent, "failed", exc.message)
        except ObjectNotFound:
            await self._finish(intent, "failed", "nothing was uploaded")
        except StorageError as exc:
            _log.exception("processing direct upload %s failed", intent.id)
            await self._finish(intent, "failed", str(exc))
        else:
            await self._finish(intent, "done")

    async def reclaim(self) -> int:
        """Take up the intents left processing by a process that died; returns how many were
        found."""
        found = await self._store.claimable_intents(datetime.now(UTC))
        for tenant_id, intent_id in found:
            self._tasks.spawn(self.take(tenant_id, intent_id), name=f"upload-{intent_id}")
        return len(found)


async def reclaim_periodically(apps: list[GenerateApp | DirectUploadsApp], every: float) -> None:
    """Look for work whose holder died every `every` seconds (after the look at start-up)."""
    while True:
        await asyncio.sleep(every)
        for app in apps:
            try:
                await app.reclaim()
            except Exception:  # the database is unreachable: look again next time
                _log.exception("looking for abandoned artifact jobs failed")
