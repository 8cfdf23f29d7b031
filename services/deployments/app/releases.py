"""Release use-cases: listing, notes, tags, update types, deleting whole releases."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from common.core.audit import Actor
from common.core.errors import BadRequest, Conflict, NotFound
from common.core.requestid import current_request_id
from services.deployments.app.artifacts import ArtifactsApp
from services.deployments.app.audit import release_audit
from services.deployments.models import Artifact, Release
from services.deployments.store import DataStore, ReleaseFilter

__all__ = [
    "MAX_NOTES",
    "MAX_TAGS_PER_RELEASE",
    "MAX_UNIQUE_TAGS",
    "ReleaseView",
    "ReleasesApp",
    "normalize_tags",
]

MAX_NOTES: Final = 1024
MAX_TAGS_PER_RELEASE: Final = 20
MAX_UNIQUE_TAGS: Final = 100
_MAX_TAG_LENGTH: Final = 1024
_TAG: Final = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class ReleaseView:
    """A release with its artifacts."""

    release: Release
    artifacts: list[Artifact]


def normalize_tags(tags: Sequence[Any]) -> list[str]:
    """Validate, lower-case and de-duplicate tags (order kept), or 400."""
    result: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise BadRequest("invalid request body: tags must be non-empty strings")
        if len(tag) > _MAX_TAG_LENGTH:
            raise BadRequest(
                f"invalid request body: a tag may have at most {_MAX_TAG_LENGTH} characters"
            )
        if not _TAG.fullmatch(tag):
            raise BadRequest(
                "invalid request body: tags may contain only letters, digits, "
                "underscores, periods and hyphens"
            )
        lowered = tag.lower()
        if lowered not in result:
            result.append(lowered)
    if len(result) > MAX_TAGS_PER_RELEASE:
        raise BadRequest(
            f"invalid request body: a release may have at most {MAX_TAGS_PER_RELEASE} tags"
        )
    return result


class ReleasesApp:
    """Releases: the artifacts sharing a name."""

    def __init__(self, store: DataStore, artifacts: ArtifactsApp) -> None:
        self._store = store
        self._artifacts = artifacts

    async def _with_artifacts(self, tenant_id: str, releases: list[Release]) -> list[ReleaseView]:
        if not releases:
            return []
        by_name: dict[str, list[Artifact]] = {r.name: [] for r in releases}
        for artifact in await self._store.artifacts_named(tenant_id, list(by_name)):
            by_name[artifact.name].append(artifact)
        return [ReleaseView(release=r, artifacts=by_name[r.name]) for r in releases]

    async def search(
        self,
        tenant_id: str,
        filter_: ReleaseFilter,
        *,
        skip: int = 0,
        limit: int | None = None,
        sort: tuple[str, bool] = ("name", True),
    ) -> tuple[list[ReleaseView], int]:
        """Matching releases with their artifacts (a page when `limit` is given) and the total."""
        releases, total = await self._store.list_releases(
            tenant_id, filter_, skip=skip, limit=limit, sort=sort
        )
        return await self._with_artifacts(tenant_id, releases), total

    async def get(self, tenant_id: str, name: str) -> ReleaseView:
        """One release, or 404."""
        release = await self._store.get_release(tenant_id, name)
        if release is None:
            raise NotFound("release not found")
        return (await self._with_artifacts(tenant_id, [release]))[0]

    async def update_notes(
        self, tenant_id: str, name: str, *, notes: str | None, actor: Actor | None = None
    ) -> None:
        """Replace the release notes (at most 1024 characters); None leaves them."""
        if notes is None:
            await self.get(tenant_id, name)
            return
        if len(notes) > MAX_NOTES:
            raise BadRequest(
                f"invalid request body: notes: the length must be no more than {MAX_NOTES}"
            )
        effects = release_audit(tenant_id, actor, name, f"notes set to {notes!r}")
        if not await self._store.set_release_notes(tenant_id, name, notes, effects=effects):
            raise NotFound("release not found")

    async def replace_tags(
        self, tenant_id: str, name: str, *, tags: Sequence[Any], actor: Actor | None = None
    ) -> None:
        """Replace the release's tags, keeping the tenant under 100 distinct tags."""
        normalized = normalize_tags(tags)
        release = await self._store.get_release(tenant_id, name)
        if release is None:
            raise NotFound("release not found")
        in_use = set(await self._store.release_tags(tenant_id))
        others_only = in_use - set(release.tags)
        if len(others_only | set(normalized)) > MAX_UNIQUE_TAGS:
            raise Conflict("the total number of unique tags has been exceeded")
        effects = release_audit(tenant_id, actor, name, f"tags set to {', '.join(normalized)}")
        if not await self._store.set_release_tags(tenant_id, name, normalized, effects=effects):
            raise NotFound("release not found")

    async def tags(self, tenant_id: str) -> list[str]:
        """Every release tag in use."""
        return await self._store.release_tags(tenant_id)

    async def update_types(self, tenant_id: str) -> list[str]:
        """Every update type among the artifacts."""
        return await self._store.release_update_types(tenant_id)

    async def delete(self, tenant_id: str, names: Sequence[str]) -> None:
        """Delete releases with their artifacts; 409 while an active deployment uses one."""
        if not names:
            raise BadRequest("at least one release name has to be provided")
        active = await self._store.active_deployments_using(tenant_id, artifact_names=names)
        if active:
            message = "release(s) used in active deployment"
            raise Conflict(
                message,
                body={
                    "error": message,
                    "active_deployments": active,
                    "request_id": current_request_id(),
                },
            )
        artifacts = await self._store.artifacts_named(tenant_id, names)
        await self._artifacts.remove(tenant_id, [a.id for a in artifacts])
        await self._store.delete_releases(tenant_id, names)
