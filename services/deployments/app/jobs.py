"""Background artifact work with persistent records: generation and direct uploads.

Each job is recorded before its work starts and marked `done` or `failed` at the end; a job
interrupted by a restart is still `pending`/`processing` and is run again at start-up
(`recover`). Running a job twice is harmless: the artifact id is fixed by the job.
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
from services.deployments.app.artifacts import MAX_DESCRIPTION, ArtifactsApp, parse_uuid
from services.deployments.app.errors import ArtifactTooLarge
from services.deployments.app.tasks import BackgroundTasks
from services.deployments.artifact import PAYLOAD_FILE_NAME, write_single_file_artifact
from services.deployments.models import GenerateJob, UploadIntent
from services.deployments.storage import (
    Link,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    StorageError,
    object_key,
)
from services.deployments.store import DataStore

__all__ = ["GENERATE_TYPES", "UPLOAD_LINK_EXPIRE", "DirectUploadsApp", "GenerateApp"]

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
    ) -> None:
        self._store = store
        self._storage = storage
        self._artifacts = artifacts
        self._tasks = tasks
        self._max_size = max_generate_size

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
        self._tasks.spawn(self.run(job), name=f"generate-{job_id}")
        return job

    async def run(self, job: GenerateJob) -> None:
        """Build the artifact, ingest it like an upload and record the outcome."""
        tenant_id = job.tenant_id
        if await self._store.get_artifact(tenant_id, job.id) is not None:
            await self._finish(job, "done")
            return
        await self._store.set_job_state(tenant_id, job.id, "processing")
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
        await self._store.set_job_state(
            job.tenant_id, job.id, "done" if state == "done" else "failed", error=error
        )
        try:
            await self._storage.delete(job.raw_key)
        except StorageError:
            _log.exception("could not remove %s", job.raw_key)

    async def recover(self) -> int:
        """Restart the jobs an earlier process left unfinished; returns how many."""
        jobs = await self._store.unfinished_jobs()
        for job in jobs:
            self._tasks.spawn(self.run(job), name=f"generate-{job.id}")
        return len(jobs)


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
    ) -> None:
        self._store = store
        self._storage = storage
        self._artifacts = artifacts
        self._tasks = tasks
        self._enabled = enabled

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
        intent = await self._store.claim_intent(
            tenant_id, intent_id, from_state="pending", to_state="processing"
        )
        if intent is None:
            raise NotFound("not found")
        self._tasks.spawn(self.process(intent), name=f"upload-{intent_id}")

    async def process(self, intent: UploadIntent) -> None:
        """Parse the uploaded object and record the artifact (or drop the object)."""
        tenant_id = intent.tenant_id
        if await self._store.get_artifact(tenant_id, intent.id) is not None:
            await self._store.set_intent_state(tenant_id, intent.id, "done")
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
            await self._store.set_intent_state(tenant_id, intent.id, "failed", error=exc.message)
        except ObjectNotFound:
            await self._store.set_intent_state(
                tenant_id, intent.id, "failed", error="nothing was uploaded"
            )
        except StorageError as exc:
            _log.exception("processing direct upload %s failed", intent.id)
            await self._store.set_intent_state(tenant_id, intent.id, "failed", error=str(exc))
        else:
            await self._store.set_intent_state(tenant_id, intent.id, "done")

    async def recover(self) -> int:
        """Resume intents an earlier process was processing; returns how many."""
        intents = await self._store.unfinished_intents()
        for intent in intents:
            self._tasks.spawn(self.process(intent), name=f"upload-{intent.id}")
        return len(intents)
