"""Releases in Mongo: one document per artifact name, kept by the artifact store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING

from common.core.outbox import Effect
from services.deployments.models import Release, ReleaseArtifact
from services.deployments.store import ReleaseFilter, ReleaseStore
from services.deployments.store.base import MongoCollections, names_query, text_query
from services.deployments.store.indexes import RELEASES

__all__ = ["MongoReleaseStore"]


def _release_from_doc(doc: Mapping[str, Any]) -> Release:
    return Release(
        name=doc["name"],
        artifacts=[ReleaseArtifact(**a) for a in doc.get("artifacts") or []],
        artifacts_count=int(doc.get("artifacts_count", 0)),
        modified=doc["modified"],
        tags=list(doc.get("tags") or []),
        notes=doc.get("notes") or "",
    )


class MongoReleaseStore(MongoCollections, ReleaseStore):
    """Releases: their listing, tags and notes."""

    async def get_release(self, tenant_id: str, name: str) -> Release | None:
        """Find by name."""
        doc = await self._c(RELEASES, tenant_id).find_one({"name": name})
        return _release_from_doc(doc) if doc else None

    async def list_releases(
        self,
        tenant_id: str,
        filter_: ReleaseFilter,
        *,
        skip: int = 0,
        limit: int | None = None,
        sort: tuple[str, bool] = ("name", True),
    ) -> tuple[list[Release], int]:
        """Find a page of releases."""
        coll = self._c(RELEASES, tenant_id)
        query = names_query("name", filter_.names)
        if filter_.description is not None:
            query["artifacts.description"] = text_query(filter_.description)
        if filter_.device_type:
            query["artifacts.device_types"] = filter_.device_type
        if filter_.update_type:
            query["artifacts.update_types"] = filter_.update_type
        if filter_.tags:
            query["tags"] = {"$in": list(filter_.tags)}
        order = ASCENDING if sort[1] else DESCENDING
        keys = [(sort[0], order)] if sort[0] != "name" else []
        cursor = coll.find(query).sort([*keys, ("name", order)]).skip(skip)
        if limit is not None:
            cursor = cursor.limit(limit)
        items = [_release_from_doc(d) async for d in cursor]
        if limit is None and skip == 0:
            return items, len(items)
        return items, await coll.count_documents(query)

    async def set_release_tags(
        self, tenant_id: str, name: str, tags: list[str], *, effects: Sequence[Effect] = ()
    ) -> bool:
        """Replace the tags, with `effects`."""
        query, update = {"name": name}, {"$set": {"tags": tags}}
        return await self._update_with_effects(RELEASES, tenant_id, query, update, effects)

    async def set_release_notes(
        self, tenant_id: str, name: str, notes: str, *, effects: Sequence[Effect] = ()
    ) -> bool:
        """Replace the notes, with `effects`."""
        query, update = {"name": name}, {"$set": {"notes": notes}}
        return await self._update_with_effects(RELEASES, tenant_id, query, update, effects)

    async def release_tags(self, tenant_id: str) -> list[str]:
        """Distinct tags."""
        return sorted(str(t) for t in await self._c(RELEASES, tenant_id).distinct("tags"))

    async def release_update_types(self, tenant_id: str) -> list[str]:
        """Distinct update types."""
        cursor = await self._c(RELEASES, tenant_id).aggregate(
            [
                {"$unwind": "$artifacts"},
                {"$unwind": "$artifacts.update_types"},
                {"$group": {"_id": "$artifacts.update_types"}},
            ]
        )
        return sorted([str(row["_id"]) async for row in cursor if row.get("_id")])

    async def delete_releases(self, tenant_id: str, names: Sequence[str]) -> None:
        """Delete by names."""
        await self._c(RELEASES, tenant_id).delete_many({"name": {"$in": list(names)}})
