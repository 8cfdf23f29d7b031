"""Artifacts (`images`) in Mongo; recording or removing one keeps its release in step.

Field names follow Mender's collection (`meta_artifact.name`, `meta_artifact.depends.device_type`,
`meta.description`), which Mender's tests and tools read.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, atomically
from common.core.outbox import Effect
from services.deployments.models import (
    Artifact,
    ArtifactInfo,
    ArtifactMeta,
    Update,
    UpdateFile,
)
from services.deployments.store import (
    ArtifactFilter,
    ArtifactStore,
    DuplicateArtifact,
    DuplicateId,
)
from services.deployments.store.base import MongoCollections, names_query, text_query
from services.deployments.store.indexes import ARTIFACTS, DEPLOYMENTS, RELEASES

__all__ = ["MongoArtifactStore", "artifact_doc", "artifact_from_doc", "depends_combinations"]


def depends_combinations(depends: Mapping[str, Any]) -> list[str]:
    """Every combination of the depends values (lists unwound), as canonical JSON strings.

    Two artifacts of one name conflict when they share a combination: the unique index
    over (name, combination) enforces Mender's artifact uniqueness rule.
    """
    keys = sorted(depends)
    choices = [
        [str(v) for v in depends[k]] if isinstance(depends[k], list) else [str(depends[k])]
        for k in keys
    ]
    combos = {
        json.dumps(dict(zip(keys, values, strict=True)), sort_keys=True, separators=(",", ":"))
        for values in itertools.product(*choices)
    }
    return sorted(combos)


def artifact_doc(artifact: Artifact) -> Document:
    """The stored document of an artifact (also embedded in its device deployments)."""
    meta = artifact.meta
    depends = {**meta.depends, "device_type": list(meta.device_types_compatible)}
    return {
        "_id": artifact.id,
        "meta": {"description": artifact.description},
        "meta_artifact": {
            "name": meta.name,
            "device_types_compatible": list(meta.device_types_compatible),
            "info": {"format": meta.info.format, "version": meta.info.version},
            "signed": meta.signed,
            "updates": [
                {
                    "type_info": {"type": u.type},
                    "files": [f.model_dump() for f in u.files],
                    "meta_data": u.meta_data,
                }
                for u in meta.updates
            ],
            "provides": dict(meta.provides),
            "provides_idx": [{"key": k, "value": v} for k, v in sorted(meta.provides.items())],
            "depends": depends,
            "depends_idx": depends_combinations(depends),
            "clears_provides": list(meta.clears_provides),
        },
        "size": artifact.size,
        "modified": artifact.modified,
    }


def artifact_from_doc(doc: Mapping[str, Any]) -> Artifact:
    """The artifact of a stored document."""
    meta = doc.get("meta_artifact") or {}
    info = meta.get("info") or {}
    return Artifact(
        id=str(doc["_id"]),
        description=(doc.get("meta") or {}).get("description") or "",
        meta=ArtifactMeta(
            name=meta.get("name", ""),
            device_types_compatible=list(meta.get("device_types_compatible") or []),
            info=ArtifactInfo(format=info.get("format", "mender"), version=info.get("version", 3)),
            signed=bool(meta.get("signed", False)),
            updates=[
                Update(
                    type=(u.get("type_info") or {}).get("type"),
                    files=[UpdateFile(**f) for f in u.get("files") or []],
                    meta_data=u.get("meta_data"),
                )
                for u in meta.get("updates") or []
            ],
            provides=dict(meta.get("provides") or {}),
            depends=dict(meta.get("depends") or {}),
            clears_provides=list(meta.get("clears_provides") or []),
        ),
        size=int(doc.get("size", 0)),
        modified=doc["modified"],
    )


def _artifact_filter(filter_: ArtifactFilter) -> Document:
    query = names_query("meta_artifact.name", filter_.names)
    if filter_.description is not None:
        query["meta.description"] = text_query(filter_.description)
    if filter_.device_type is not None:
        query["meta_artifact.device_types_compatible"] = text_query(filter_.device_type)
    return query


def _artifact_clash(exc: DuplicateKeyError, artifact_id: str) -> Exception:
    """The domain error of a unique-index violation when recording an artifact."""
    details = exc.details or {}
    if "_id" in (details.get("keyPattern") or {}):
        return DuplicateId(artifact_id)
    raw = (details.get("keyValue") or {}).get("meta_artifact.depends_idx")
    try:
        conflict = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        conflict = {}
    return DuplicateArtifact(conflict)


def _release_entry(artifact: Artifact) -> Document:
    """The artifact's entry in the list of its release."""
    return {
        "id": artifact.id,
        "description": artifact.description,
        "device_types": list(artifact.meta.device_types_compatible),
        "update_types": artifact.meta.update_types,
        "modified": artifact.modified,
    }


class MongoArtifactStore(MongoCollections, ArtifactStore):
    """Artifacts, with their entries in the releases and in unfinished deployments."""

    async def record_artifact(
        self, tenant_id: str, artifact: Artifact, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Insert, list in its release, offer to unfinished deployments, record `effects`:
        one transaction."""

        async def work(session: AsyncClientSession) -> None:
            await self._c(ARTIFACTS, tenant_id).insert_one(artifact_doc(artifact), session=session)
            await self._c(RELEASES, tenant_id).update_one(
                {"name": artifact.name, "artifacts.id": {"$ne": artifact.id}},
                {
                    "$push": {"artifacts": _release_entry(artifact)},
                    "$inc": {"artifacts_count": 1},
                    "$max": {"modified": artifact.modified},
                    "$setOnInsert": {"tags": [], "notes": ""},
                },
                upsert=True,
                session=session,
            )
            await self._c(DEPLOYMENTS, tenant_id).update_many(
                {"artifact_name": artifact.name, "active": True, "type": "software"},
                {"$addToSet": {"artifacts": artifact.id}},
                session=session,
            )
            await self._outbox.add(effects, session=session)

        for attempt in (1, 2):
            try:
                await atomically(self._db.client, work)
                return
            except DuplicateKeyError as exc:
                if "name" not in ((exc.details or {}).get("keyPattern") or {}):
                    raise _artifact_clash(exc, artifact.id) from exc
                if attempt == 2:
                    raise
                # A concurrent upload created the release first; it exists now.

    async def get_artifact(self, tenant_id: str, artifact_id: str) -> Artifact | None:
        """Find by id."""
        doc = await self._c(ARTIFACTS, tenant_id).find_one({"_id": artifact_id})
        return artifact_from_doc(doc) if doc else None

    async def list_artifacts(
        self,
        tenant_id: str,
        filter_: ArtifactFilter,
        *,
        skip: int = 0,
        limit: int | None = None,
        sort: tuple[str, bool] = ("name", True),
    ) -> tuple[list[Artifact], int]:
        """Find a page, sorted by name or modification time."""
        coll = self._c(ARTIFACTS, tenant_id)
        query = _artifact_filter(filter_)
        field = "modified" if sort[0] == "modified" else "meta_artifact.name"
        order = ASCENDING if sort[1] else DESCENDING
        cursor = coll.find(query).sort([(field, order), ("_id", order)]).skip(skip)
        if limit is not None:
            cursor = cursor.limit(limit)
        items = [artifact_from_doc(d) async for d in cursor]
        if limit is None and skip == 0:
            return items, len(items)
        return items, await coll.count_documents(query)

    async def artifacts_named(self, tenant_id: str, names: Sequence[str]) -> list[Artifact]:
        """Find by names."""
        cursor = self._c(ARTIFACTS, tenant_id).find({"meta_artifact.name": {"$in": list(names)}})
        return [artifact_from_doc(d) async for d in cursor.sort([("modified", ASCENDING)])]

    async def smallest_compatible_artifact(
        self, tenant_id: str, artifact_ids: Sequence[str], device_type: str
    ) -> Artifact | None:
        """Smallest by size among the ids for the device type.

        A deployment names few artifacts; they are fetched by id (index) and the device
        type is checked here.
        """
        cursor = (
            self._c(ARTIFACTS, tenant_id)
            .find({"_id": {"$in": list(artifact_ids)}})
            .sort([("size", ASCENDING), ("_id", ASCENDING)])
        )
        async for doc in cursor:
            if device_type in (doc.get("meta_artifact") or {}).get("device_types_compatible", []):
                return artifact_from_doc(doc)
        return None

    async def describe_artifact(
        self, tenant_id: str, artifact_id: str, description: str, modified: datetime
    ) -> Artifact | None:
        """Set the description in the artifact and its release's copy: one transaction."""

        async def work(session: AsyncClientSession) -> Artifact | None:
            doc = await self._c(ARTIFACTS, tenant_id).find_one_and_update(
                {"_id": artifact_id},
                {"$set": {"meta.description": description, "modified": modified}},
                session=session,
            )
            if doc is None:
                return None
            await self._c(RELEASES, tenant_id).update_one(
                {"name": (doc.get("meta_artifact") or {}).get("name"), "artifacts.id": artifact_id},
                {
                    "$set": {
                        "artifacts.$.description": description,
                        "artifacts.$.modified": modified,
                    },
                    "$max": {"modified": modified},
                },
                session=session,
            )
            return artifact_from_doc(doc)

        return await atomically(self._db.client, work)

    async def forget_artifact(
        self,
        tenant_id: str,
        artifact_id: str,
        *,
        effects: Callable[[Artifact], Sequence[Effect]] = lambda _: (),
    ) -> Artifact | None:
        """Delete and drop from its release (an emptied release goes), and record the
        `effects` of the deleted artifact: one transaction."""

        async def work(session: AsyncClientSession) -> Artifact | None:
            doc = await self._c(ARTIFACTS, tenant_id).find_one_and_delete(
                {"_id": artifact_id}, session=session
            )
            if doc is None:
                return None
            artifact = artifact_from_doc(doc)
            await self._outbox.add(effects(artifact), session=session)
            releases = self._c(RELEASES, tenant_id)
            await releases.update_one(
                {"name": artifact.name, "artifacts.id": artifact.id},
                {"$pull": {"artifacts": {"id": artifact.id}}, "$inc": {"artifacts_count": -1}},
                session=session,
            )
            await releases.delete_one(
                {"name": artifact.name, "artifacts_count": {"$lte": 0}}, session=session
            )
            return artifact

        return await atomically(self._db.client, work)
