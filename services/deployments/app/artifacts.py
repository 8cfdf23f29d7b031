"""Artifact use-cases: upload (stream → storage and parser at once), list, edit, delete, links."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from common.core.audit import Actor
from common.core.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from services.deployments.app.audit import artifact_audit
from services.deployments.app.errors import (
    ArtifactConflict,
    ArtifactInUse,
    ArtifactTooLarge,
    ImageUsedInDeployment,
    InvalidArtifact,
)
from services.deployments.artifact import ArtifactError, ArtifactParser
from services.deployments.artifact import ArtifactMeta as ParsedArtifact
from services.deployments.models import Artifact, ArtifactInfo, ArtifactMeta, Update, UpdateFile
from services.deployments.storage import (
    Link,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    StorageError,
    object_key,
)
from services.deployments.store import ArtifactFilter, DataStore, DuplicateArtifact, DuplicateId

__all__ = [
    "MANAGEMENT_LINK_EXPIRE",
    "MAX_DESCRIPTION",
    "ArtifactsApp",
    "artifact_from_parsed",
    "parse_uuid",
]

_log = logging.getLogger("deployments.artifacts")

MAX_DESCRIPTION: Final = 4096
# Management download links live 15 minutes (Mender's presign.expire_seconds default).
MANAGEMENT_LINK_EXPIRE: Final = timedelta(minutes=15)


def parse_uuid(value: str, *, what: str = "ID") -> str:
    """The canonical form of a UUID, or 400."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(f"{what} is not a valid UUID") from None


def artifact_from_parsed(parsed: ParsedArtifact) -> ArtifactMeta:
    """Convert the parser's result into the domain model."""
    return ArtifactMeta(
        name=parsed.name,
        device_types_compatible=list(parsed.device_types_compatible),
        info=ArtifactInfo(format=parsed.format, version=parsed.version),
        signed=parsed.signed,
        updates=[
            Update(
                type=u.type,
                files=[
                    UpdateFile(name=f.name, checksum=f.checksum, size=f.size, date=f.date)
                    for f in u.files
                ],
                meta_data=u.meta_data[0] if u.meta_data else None,
            )
            for u in parsed.updates
        ],
        provides=dict(parsed.provides),
        depends=dict(parsed.depends),
        clears_provides=list(parsed.clears_provides),
    )


class ArtifactsApp:
    """Artifacts: stored files plus their parsed metadata."""

    def __init__(self, store: DataStore, storage: Storage, *, max_image_size: int) -> None:
        self._store = store
        self._storage = storage
        self._max_image_size = max_image_size

    @property
    def max_image_size(self) -> int:
        """The largest artifact accepted."""
        return self._max_image_size

    async def upload(
        self,
        tenant_id: str,
        *,
        chunks: AsyncIterable[bytes],
        description: str = "",
        artifact_id: str | None = None,
        declared_size: int | None = None,
        actor: Actor | None = None,
    ) -> Artifact:
        """Store and parse an uploaded artifact in one pass; nothing is kept if it is invalid."""
        if len(description) > MAX_DESCRIPTION:
            raise BadRequest(f"description: the length must be no more than {MAX_DESCRIPTION}")
        if declared_size is not None and declared_size > self._max_image_size:
            raise ArtifactTooLarge()
        if artifact_id:
            artifact_id = parse_uuid(artifact_id, what="artifact_id")
            if await self._store.get_artifact(tenant_id, artifact_id) is not None:
                raise Conflict("an artifact with the same ID already exists")
        return await self.ingest(
            tenant_id,
            artifact_id=artifact_id or str(uuid.uuid4()),
            chunks=chunks,
            description=description,
            declared_size=declared_size,
            actor=actor,
        )

    async def ingest(
        self,
        tenant_id: str,
        *,
        artifact_id: str,
        chunks: AsyncIterable[bytes],
        description: str = "",
        declared_size: int | None = None,
        already_stored: bool = False,
        actor: Actor | None = None,
        action: str = "upload",
    ) -> Artifact:
        """Parse the artifact while storing it under its key, then record it (with the audit
        event of the `actor`'s `action`, when an operator's).

        With `already_stored` the bytes come from storage (direct upload) and are not
        written again. On any failure the stored object is removed.
        """
        key = object_key(tenant_id, artifact_id)
        limit = self._max_image_size if declared_size is None else declared_size
        parser = ArtifactParser()
        seen = 0

        async def tee() -> AsyncIterator[bytes]:
            nonlocal seen
            async for chunk in chunks:
                seen += len(chunk)
                if seen > limit:
                    raise ArtifactTooLarge()
                parser.feed(chunk)
                yield chunk

        try:
            if already_stored:
                async for _ in tee():
                    pass
                size = seen
            else:
                size = await self._storage.put_stream(key, tee(), size_limit=limit)
            if declared_size is not None and size < declared_size:
                raise BadRequest("unexpected EOF: the artifact is shorter than its declared size")
            parsed = artifact_from_parsed(parser.finish())
        except ArtifactError as exc:
            await self._discard(key)
            raise InvalidArtifact(exc.message) from None
        except ObjectTooLarge:
            await self._discard(key)
            raise ArtifactTooLarge() from None
        except StorageError as exc:
            await self._discard(key)
            raise ServiceUnavailable(f"artifact storage failed: {exc}") from exc
        except BaseException:
            await self._discard(key)
            raise

        artifact = Artifact(
            id=artifact_id,
            description=description,
            meta=parsed,
            size=size,
            modified=datetime.now(UTC),
        )
        # A crash from here on leaves an object no artifact refers to: the storage sweep
        # removes it.
        try:
            await self._store.record_artifact(
                tenant_id, artifact, effects=artifact_audit(tenant_id, actor, action, artifact)
            )
        except DuplicateArtifact as exc:
            await self._discard(key)
            raise ArtifactConflict(exc.conflict) from None
        except DuplicateId:
            # Another upload claimed this id meanwhile; its object is the one stored now.
            raise Conflict("an artifact with the same ID already exists") from None
        return artifact

    async def _discard(self, key: str) -> None:
        try:
            await self._storage.delete(key)
        except StorageError:
            _log.exception("could not remove the rejected artifact object %s", key)

    async def get(self, tenant_id: str, artifact_id: str) -> Artifact:
        """The artifact, or 404."""
        artifact = await self._store.get_artifact(tenant_id, parse_uuid(artifact_id))
        if artifact is None:
            raise NotFound("Resource not found")
        return artifact

    async def search(
        self,
        tenant_id: str,
        filter_: ArtifactFilter,
        *,
        skip: int = 0,
        limit: int | None = None,
        sort: tuple[str, bool] = ("name", True),
    ) -> tuple[list[Artifact], int]:
        """Matching artifacts (a page when `limit` is given) and the number of all matches."""
        return await self._store.list_artifacts(
            tenant_id, filter_, skip=skip, limit=limit, sort=sort
        )

    async def edit(self, tenant_id: str, artifact_id: str, *, description: str) -> None:
        """Change the description of an artifact not yet used by any deployment."""
        artifact_id = parse_uuid(artifact_id)
        if len(description) > MAX_DESCRIPTION:
            raise BadRequest(f"description: the length must be no more than {MAX_DESCRIPTION}")
        if await self._store.get_artifact(tenant_id, artifact_id) is None:
            raise NotFound("Resource not found")
        if await self._store.active_deployments_using(
            tenant_id, artifact_id=artifact_id, active_only=False
        ):
            raise ImageUsedInDeployment()
        updated = await self._store.describe_artifact(
            tenant_id, artifact_id, description, datetime.now(UTC)
        )
        if updated is None:
            raise NotFound("Resource not found")

    async def delete(self, tenant_id: str, artifact_id: str, *, actor: Actor | None = None) -> None:
        """Delete an artifact not used by an active deployment, with its file."""
        artifact_id = parse_uuid(artifact_id)
        if await self._store.get_artifact(tenant_id, artifact_id) is None:
            raise NotFound("Resource not found")
        if await self._store.active_deployments_using(tenant_id, artifact_id=artifact_id):
            raise ArtifactInUse()
        await self.remove(tenant_id, [artifact_id], actor=actor)

    async def remove(
        self, tenant_id: str, artifact_ids: Sequence[str], *, actor: Actor | None = None
    ) -> None:
        """Delete artifacts with their release entries, then their files (no usage check).

        The file goes last: a crash before it leaves an object no artifact refers to, which
        the storage sweep removes, never an artifact without its file.
        """
        for artifact_id in artifact_ids:
            forgotten = await self._store.forget_artifact(
                tenant_id,
                artifact_id,
                effects=lambda artifact: artifact_audit(tenant_id, actor, "delete", artifact),
            )
            if forgotten is not None:
                await self._discard(object_key(tenant_id, artifact_id))

    async def download_link(self, tenant_id: str, artifact_id: str, *, external_url: str) -> Link:
        """A 15-minute download link to the artifact file."""
        artifact = await self.get(tenant_id, artifact_id)
        try:
            return await self._storage.download_link(
                object_key(tenant_id, artifact.id),
                expire=MANAGEMENT_LINK_EXPIRE,
                filename=f"{artifact.name}.mender",
                external_url=external_url,
            )
        except ObjectNotFound:
            raise NotFound("Resource not found") from None

    async def set_storage_limit(self, tenant_id: str, limit: int) -> None:
        """Set the tenant's storage limit (0 = unlimited)."""
        await self._store.set_limit(tenant_id, "storage", limit)

    async def storage_settings(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's own storage settings, if any."""
        return await self._store.get_storage_settings(tenant_id)

    async def set_storage_settings(self, tenant_id: str, settings: dict[str, Any] | None) -> None:
        """Replace (None: clear) the tenant's storage settings."""
        await self._store.set_storage_settings(tenant_id, settings)

    async def storage_limit(self, tenant_id: str) -> tuple[int, int]:
        """The tenant's storage limit (0 = unlimited) and usage (not computed, as Mender)."""
        # NOTE: Mender never computes the usage and always reports 0.
        return await self._store.get_limit(tenant_id, "storage"), 0
