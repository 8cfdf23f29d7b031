"""MongoDB implementation of the deployments store (the only module using pymongo/bson).

Field names follow Mender's collections where Mender's tests or tools read them
(`images.meta_artifact.name`, `meta_artifact.depends.device_type`, `meta.description`,
device deployments' `deviceid`/`deploymentid` and integer `status`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection, transaction
from services.deployments.models import (
    ACTIVE_STATUSES,
    STAT_NAMES,
    Artifact,
    ArtifactInfo,
    ArtifactMeta,
    Deployment,
    DeviceDeployment,
    DeviceDeploymentStatus,
    GenerateJob,
    JobState,
    LastDeviceDeployment,
    LogMessage,
    NextRequest,
    Release,
    ReleaseArtifact,
    Update,
    UpdateFile,
    UploadIntent,
)
from services.deployments.store import (
    ArtifactFilter,
    DeploymentFilter,
    DuplicateArtifact,
    DuplicateDeployment,
    DuplicateId,
    ReleaseFilter,
    StatsChange,
    TextMatch,
)
from services.deployments.store.indexes import (
    ARTIFACTS,
    DEPLOYMENT_STATS,
    DEPLOYMENTS,
    DEVICE_DEPLOYMENTS,
    JOBS,
    LAST_STATUS,
    LIMITS,
    LOGS,
    RELEASES,
    SETTINGS,
    UPLOADS,
)

__all__ = ["MongoStore", "depends_combinations", "search_tokens"]

_COUNT_CAP: Final = 10_000
_TOKEN_SPLIT: Final = re.compile(r"[^\w]+")
_ACTIVE_INTS: Final = sorted(int(s) for s in ACTIVE_STATUSES)
_FINISHING: Final = ("success", "failure", "already-installed", "noartifact", "aborted")
_FINISHING_ALL: Final = (*_FINISHING, "decommissioned")


def search_tokens(*texts: str) -> list[str]:
    """Lower-cased word tokens of the texts (the free-text search index of deployments)."""
    tokens: list[str] = []
    for text in texts:
        for token in _TOKEN_SPLIT.split(text.lower()):
            if token and token not in tokens:
                tokens.append(token)
    return tokens


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


def _text(match: TextMatch) -> Any:
    escaped = re.escape(match.value)
    if match.kind == "exact":
        return match.value
    if match.kind == "prefix":
        return {"$regex": "^" + escaped}
    return {"$regex": escaped, "$options": "i"}


def _names(field: str, matches: Sequence[TextMatch]) -> Document:
    if not matches:
        return {}
    exact = [m.value for m in matches if m.kind == "exact"]
    others = [{field: _text(m)} for m in matches if m.kind != "exact"]
    if exact:
        others.append({field: {"$in": exact}})
    return others[0] if len(others) == 1 else {"$or": others}


# --- artifacts -------------------------------------------------------------------------


def _artifact_doc(artifact: Artifact) -> Document:
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


def _artifact(doc: Mapping[str, Any]) -> Artifact:
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
    query = _names("meta_artifact.name", filter_.names)
    if filter_.description is not None:
        query["meta.description"] = _text(filter_.description)
    if filter_.device_type is not None:
        query["meta_artifact.device_types_compatible"] = _text(filter_.device_type)
    return query


# --- releases --------------------------------------------------------------------------


def _release_entry(artifact: Artifact) -> Document:
    return {
        "id": artifact.id,
        "description": artifact.description,
        "device_types": list(artifact.meta.device_types_compatible),
        "update_types": artifact.meta.update_types,
        "modified": artifact.modified,
    }


def _release(doc: Mapping[str, Any]) -> Release:
    return Release(
        name=doc["name"],
        artifacts=[ReleaseArtifact(**a) for a in doc.get("artifacts") or []],
        artifacts_count=int(doc.get("artifacts_count", 0)),
        modified=doc["modified"],
        tags=list(doc.get("tags") or []),
        notes=doc.get("notes") or "",
    )


# --- deployments -----------------------------------------------------------------------


_COUNTERS: Final = ("stats", "device_count", "total_size")
_STATUS_RANK: Final = {"pending": 0, "inprogress": 1, "finished": 2}


def _deployment_doc(deployment: Deployment) -> Document:
    doc = deployment.model_dump(exclude=set(_COUNTERS))
    doc["_id"] = doc.pop("id")
    doc["search_tokens"] = search_tokens(deployment.name, deployment.artifact_name)
    return doc


def _stats_doc(deployment: Deployment) -> Document:
    return {
        "_id": deployment.id,
        "stats": {name: int(deployment.stats.get(name, 0)) for name in STAT_NAMES},
        "device_count": deployment.device_count,
        "total_size": deployment.total_size,
        "max_devices": deployment.max_devices,
        # Devices that may still start; a plain field so the claim needs no `$expr`.
        "room": deployment.max_devices - deployment.device_count,
        "status": deployment.status,
    }


_DEPLOYMENT_FIELDS: Final = frozenset(Deployment.model_fields) - set(_COUNTERS)


def _deployment(doc: Mapping[str, Any], counters: Mapping[str, Any] | None) -> Deployment:
    data = {k: v for k, v in doc.items() if k in _DEPLOYMENT_FIELDS}
    counters = counters or {}
    return Deployment(
        id=str(doc["_id"]),
        stats={name: int((counters.get("stats") or {}).get(name, 0)) for name in STAT_NAMES},
        device_count=int(counters.get("device_count", 0)),
        total_size=int(counters.get("total_size", 0)),
        **data,
    )


def _derived_status(counters: Mapping[str, Any]) -> str:
    """The status the counters call for (Mender's rule)."""
    stats = counters.get("stats") or {}
    done = sum(int(stats.get(name, 0)) for name in _FINISHING_ALL)
    if done >= int(counters.get("max_devices", 0)):
        return "finished"
    if any(int(stats.get(name, 0)) > 0 for name in STAT_NAMES if name != "pending"):
        return "inprogress"
    return "pending"


def _deployment_filter(filter_: DeploymentFilter) -> Document:
    query: Document = {}
    if filter_.status is not None and filter_.status != "aborted":
        query["status"] = filter_.status
    if filter_.type == "configuration":
        query["type"] = "configuration"
    elif filter_.type == "software":
        query["type"] = {"$ne": "configuration"}
    tokens = search_tokens(filter_.search)
    if tokens:
        query["search_tokens"] = {"$all": tokens}
    if filter_.names:
        query["name"] = {"$in": list(filter_.names)}
    if filter_.ids:
        query["_id"] = {"$in": list(filter_.ids)}
    if filter_.device_ids is not None:
        query["device_list"] = {"$in": list(filter_.device_ids)}
    created: Document = {}
    if filter_.created_before is not None:
        created["$lte"] = filter_.created_before
    if filter_.created_after is not None:
        created["$gte"] = filter_.created_after
    if created:
        query["created"] = created
    return query


# --- device deployments ----------------------------------------------------------------


def _dd_doc(dd: DeviceDeployment) -> Document:
    return {
        "_id": dd.id,
        "deploymentid": dd.deployment_id,
        "deviceid": dd.device_id,
        "status": int(dd.status),
        "active": dd.active,
        "created": dd.created,
        "started": dd.started,
        "finished": dd.finished,
        "substate": dd.substate,
        "device_type": dd.device_type,
        "image": _artifact_doc(dd.image) if dd.image is not None else None,
        "request": dd.request.model_dump() if dd.request is not None else None,
        "log": dd.log,
        "deployment_type": dd.deployment_type,
        "force_installation": dd.force_installation,
        "artifact_name": dd.artifact_name,
        "retries": dd.retries,
        "attempts": dd.attempts,
        "slot": "",
    }


def _dd(doc: Mapping[str, Any]) -> DeviceDeployment:
    image = doc.get("image")
    request = doc.get("request")
    return DeviceDeployment(
        id=str(doc["_id"]),
        deployment_id=doc["deploymentid"],
        device_id=doc["deviceid"],
        status=DeviceDeploymentStatus(doc["status"]),
        active=bool(doc.get("active")),
        created=doc["created"],
        started=doc.get("started"),
        finished=doc.get("finished"),
        deleted=doc.get("deleted"),
        substate=doc.get("substate") or "",
        device_type=doc.get("device_type") or "",
        image=_artifact(image) if image else None,
        request=NextRequest(**request) if request else None,
        log=bool(doc.get("log", False)),
        deployment_type=doc.get("deployment_type") or "software",
        force_installation=bool(doc.get("force_installation", False)),
        artifact_name=doc.get("artifact_name") or "",
        retries=int(doc.get("retries", 0)),
        attempts=int(doc.get("attempts", 1)),
    )


_LIVE: Final = {"slot": ""}
# How many of a device's newest finished device deployments are looked at for a live one.
_HISTORY_PROBE: Final = 1000


class MongoStore:
    """The deployments store on one Mongo database; every query is tenant-scoped."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    def _c(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    # artifacts ------------------------------------------------------------------------

    async def insert_artifact(self, tenant_id: str, artifact: Artifact) -> None:
        """Insert; translate unique-index violations into domain errors."""
        try:
            await self._c(ARTIFACTS, tenant_id).insert_one(_artifact_doc(artifact))
        except DuplicateKeyError as exc:
            details = exc.details or {}
            if "_id" in (details.get("keyPattern") or {}):
                raise DuplicateId(artifact.id) from exc
            raw = (details.get("keyValue") or {}).get("meta_artifact.depends_idx")
            try:
                conflict = json.loads(raw) if isinstance(raw, str) else {}
            except ValueError:
                conflict = {}
            raise DuplicateArtifact(conflict) from exc

    async def get_artifact(self, tenant_id: str, artifact_id: str) -> Artifact | None:
        """Find by id."""
        doc = await self._c(ARTIFACTS, tenant_id).find_one({"_id": artifact_id})
        return _artifact(doc) if doc else None

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
        items = [_artifact(d) async for d in cursor]
        if limit is None and skip == 0:
            return items, len(items)
        return items, await coll.count_documents(query)

    async def artifacts_named(self, tenant_id: str, names: Sequence[str]) -> list[Artifact]:
        """Find by names."""
        cursor = self._c(ARTIFACTS, tenant_id).find({"meta_artifact.name": {"$in": list(names)}})
        return [_artifact(d) async for d in cursor.sort([("modified", ASCENDING)])]

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
                return _artifact(doc)
        return None

    async def set_artifact_description(
        self, tenant_id: str, artifact_id: str, description: str, modified: datetime
    ) -> Artifact | None:
        """Update the description and modification time."""
        doc = await self._c(ARTIFACTS, tenant_id).find_one_and_update(
            {"_id": artifact_id},
            {"$set": {"meta.description": description, "modified": modified}},
        )
        return _artifact(doc) if doc else None

    async def delete_artifact(self, tenant_id: str, artifact_id: str) -> Artifact | None:
        """Delete by id."""
        doc = await self._c(ARTIFACTS, tenant_id).find_one_and_delete({"_id": artifact_id})
        return _artifact(doc) if doc else None

    # releases -------------------------------------------------------------------------

    async def add_to_release(self, tenant_id: str, artifact: Artifact) -> None:
        """Push the artifact into its release (upserted); a repeat is a no-op."""
        coll = self._c(RELEASES, tenant_id)
        try:
            await coll.update_one(
                {"name": artifact.name, "artifacts.id": {"$ne": artifact.id}},
                {
                    "$push": {"artifacts": _release_entry(artifact)},
                    "$inc": {"artifacts_count": 1},
                    "$max": {"modified": artifact.modified},
                    "$setOnInsert": {"tags": [], "notes": ""},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            # The release already lists this artifact (the filter missed, the upsert clashed).
            return

    async def remove_from_release(self, tenant_id: str, artifact: Artifact) -> None:
        """Pull the artifact; delete the release once no artifact is left."""
        coll = self._c(RELEASES, tenant_id)
        await coll.update_one(
            {"name": artifact.name, "artifacts.id": artifact.id},
            {"$pull": {"artifacts": {"id": artifact.id}}, "$inc": {"artifacts_count": -1}},
        )
        await coll.delete_one({"name": artifact.name, "artifacts_count": {"$lte": 0}})

    async def set_release_artifact_description(self, tenant_id: str, artifact: Artifact) -> None:
        """Update the release's copy of the description."""
        await self._c(RELEASES, tenant_id).update_one(
            {"name": artifact.name, "artifacts.id": artifact.id},
            {
                "$set": {
                    "artifacts.$.description": artifact.description,
                    "artifacts.$.modified": artifact.modified,
                },
                "$max": {"modified": artifact.modified},
            },
        )

    async def get_release(self, tenant_id: str, name: str) -> Release | None:
        """Find by name."""
        doc = await self._c(RELEASES, tenant_id).find_one({"name": name})
        return _release(doc) if doc else None

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
        query = _names("name", filter_.names)
        if filter_.description is not None:
            query["artifacts.description"] = _text(filter_.description)
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
        items = [_release(d) async for d in cursor]
        if limit is None and skip == 0:
            return items, len(items)
        return items, await coll.count_documents(query)

    async def set_release_tags(self, tenant_id: str, name: str, tags: list[str]) -> bool:
        """Replace the tags."""
        result = await self._c(RELEASES, tenant_id).update_one(
            {"name": name}, {"$set": {"tags": tags}}
        )
        return result.matched_count > 0

    async def set_release_notes(self, tenant_id: str, name: str, notes: str) -> bool:
        """Replace the notes."""
        result = await self._c(RELEASES, tenant_id).update_one(
            {"name": name}, {"$set": {"notes": notes}}
        )
        return result.matched_count > 0

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

    # deployments ----------------------------------------------------------------------

    async def insert_deployment(
        self, tenant_id: str, deployment: Deployment, *, checksum: str
    ) -> None:
        """Insert the deployment and its counters together (one transaction)."""
        doc = _deployment_doc(deployment)
        doc["constructor_checksum"] = checksum
        try:
            async with transaction(self._db.client) as session:
                await self._c(DEPLOYMENTS, tenant_id).insert_one(doc, session=session)
                await self._c(DEPLOYMENT_STATS, tenant_id).insert_one(
                    _stats_doc(deployment), session=session
                )
        except DuplicateKeyError as exc:
            raise DuplicateDeployment(deployment.id) from exc

    async def _counters(self, tenant_id: str, ids: Sequence[str]) -> dict[str, Document]:
        cursor = self._c(DEPLOYMENT_STATS, tenant_id).find({"_id": {"$in": list(ids)}})
        return {str(d["_id"]): d async for d in cursor}

    async def get_deployment(self, tenant_id: str, deployment_id: str) -> Deployment | None:
        """Find by id, with its counters."""
        doc = await self._c(DEPLOYMENTS, tenant_id).find_one({"_id": deployment_id})
        if doc is None:
            return None
        counters = await self._c(DEPLOYMENT_STATS, tenant_id).find_one({"_id": deployment_id})
        return _deployment(doc, counters)

    async def get_deployments(
        self, tenant_id: str, deployment_ids: Sequence[str]
    ) -> list[Deployment]:
        """Find by ids, with their counters."""
        cursor = self._c(DEPLOYMENTS, tenant_id).find({"_id": {"$in": list(deployment_ids)}})
        docs = [d async for d in cursor]
        counters = await self._counters(tenant_id, [str(d["_id"]) for d in docs])
        return [_deployment(d, counters.get(str(d["_id"]))) for d in docs]

    async def list_deployments(
        self, tenant_id: str, filter_: DeploymentFilter, *, skip: int, limit: int
    ) -> tuple[list[Deployment], int]:
        """Find a page, by creation time."""
        coll = self._c(DEPLOYMENTS, tenant_id)
        query = _deployment_filter(filter_)
        if filter_.status == "aborted":
            aborted = self._c(DEPLOYMENT_STATS, tenant_id).find(
                {"stats.aborted": {"$gt": 0}}, projection={"_id": 1}
            )
            ids = [str(d["_id"]) async for d in aborted]
            wanted = set(filter_.ids) if filter_.ids else None
            query["_id"] = {"$in": [i for i in ids if wanted is None or i in wanted]}
        order = ASCENDING if filter_.ascending else DESCENDING
        cursor = (
            coll.find(query, projection={"search_tokens": 0})
            .sort([("created", order), ("_id", order)])
            .skip(skip)
            .limit(limit)
        )
        docs = [d async for d in cursor]
        counters = await self._counters(tenant_id, [str(d["_id"]) for d in docs])
        items = [_deployment(d, counters.get(str(d["_id"]))) for d in docs]
        return items, await coll.count_documents(query)

    async def add_artifact_to_deployments(
        self, tenant_id: str, artifact_name: str, artifact_id: str
    ) -> None:
        """Append the id to unfinished deployments of the name."""
        await self._c(DEPLOYMENTS, tenant_id).update_many(
            {"artifact_name": artifact_name, "active": True, "type": "software"},
            {"$addToSet": {"artifacts": artifact_id}},
        )

    async def active_deployments_using(
        self,
        tenant_id: str,
        *,
        artifact_id: str | None = None,
        artifact_names: Sequence[str] = (),
        active_only: bool = True,
    ) -> list[str]:
        """Ids of deployments referring to the artifact (or names)."""
        query: Document = {}
        if artifact_id is not None:
            query["artifacts"] = artifact_id
        if artifact_names:
            query["artifact_name"] = {"$in": list(artifact_names)}
        if active_only:
            query["active"] = True
        cursor = self._c(DEPLOYMENTS, tenant_id).find(query, projection={"_id": 1})
        return [str(d["_id"]) async for d in cursor]

    async def find_next_deployment(
        self, tenant_id: str, device_id: str, created_after: datetime | None
    ) -> Deployment | None:
        """Oldest active deployment listing the device (partial multikey index)."""
        query: Document = {"device_list": device_id, "active": True}
        if created_after is not None:
            query["created"] = {"$gt": created_after}
        doc = await self._c(DEPLOYMENTS, tenant_id).find_one(
            query,
            projection={"device_list": 0, "search_tokens": 0},
            sort=[("created", ASCENDING)],
        )
        return _deployment(doc, None) if doc else None

    async def change_stats(
        self,
        tenant_id: str,
        deployment_id: str,
        change: StatsChange,
        *,
        require_room: bool = False,
    ) -> bool:
        """`$inc` on the counters document, then a forward-only status move if due."""
        increments: dict[str, int] = {}
        if change.decrement:
            increments[f"stats.{change.decrement}"] = -1
        if change.increment:
            key = f"stats.{change.increment}"
            increments[key] = increments.get(key, 0) + 1
        if change.devices:
            increments["device_count"] = change.devices
            increments["room"] = -change.devices
        if change.add_size:
            increments["total_size"] = change.add_size
        query: Document = {"_id": deployment_id}
        if require_room:
            query["room"] = {"$gt": 0}
        counters = await self._c(DEPLOYMENT_STATS, tenant_id).find_one_and_update(
            query, {"$inc": increments}, return_document=ReturnDocument.AFTER
        )
        if counters is None:
            return False
        await self._advance(tenant_id, deployment_id, counters)
        return True

    async def _advance(
        self, tenant_id: str, deployment_id: str, counters: Mapping[str, Any]
    ) -> None:
        """Move the status forward (pending → inprogress → finished), never back.

        The deployment document is updated before the counters' copy of the status, so a
        crash in between is repaired by the next change.
        """
        current = str(counters.get("status", "pending"))
        target = _derived_status(counters)
        if _STATUS_RANK[target] <= _STATUS_RANK.get(current, 0):
            return
        earlier = [s for s, rank in _STATUS_RANK.items() if rank < _STATUS_RANK[target]]
        changes: Document = {"status": target}
        if target == "finished":
            changes.update(active=False, finished=datetime.now(UTC))
        await self._c(DEPLOYMENTS, tenant_id).update_one(
            {"_id": deployment_id, "status": {"$in": earlier}}, {"$set": changes}
        )
        await self._c(DEPLOYMENT_STATS, tenant_id).update_one(
            {"_id": deployment_id, "status": {"$in": earlier}}, {"$set": {"status": target}}
        )

    async def finish_deployment(
        self, tenant_id: str, deployment_id: str, *, stats: dict[str, int], now: datetime
    ) -> None:
        """Set the statistics and the finished state."""
        await self._c(DEPLOYMENTS, tenant_id).update_one(
            {"_id": deployment_id},
            {"$set": {"status": "finished", "active": False, "finished": now}},
        )
        await self._c(DEPLOYMENT_STATS, tenant_id).update_one(
            {"_id": deployment_id},
            {
                "$set": {
                    "stats": {n: int(stats.get(n, 0)) for n in STAT_NAMES},
                    "status": "finished",
                    # No device may start a finished deployment any more.
                    "room": 0,
                }
            },
        )

    # device deployments ---------------------------------------------------------------

    async def insert_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> tuple[DeviceDeployment, bool]:
        """Insert; on a concurrent insert for the same device, return that one."""
        coll = self._c(DEVICE_DEPLOYMENTS, tenant_id)
        try:
            await coll.insert_one(_dd_doc(device_deployment))
        except DuplicateKeyError:
            doc = await coll.find_one(
                {
                    "deploymentid": device_deployment.deployment_id,
                    "deviceid": device_deployment.device_id,
                    **_LIVE,
                }
            )
            if doc is None:  # deleted between the clash and the lookup
                raise
            return _dd(doc), False
        return device_deployment, True

    async def find_active_device_deployment(
        self, tenant_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """Oldest active one of the device."""
        doc = await self._c(DEVICE_DEPLOYMENTS, tenant_id).find_one(
            {"active": True, "deviceid": device_id}, sort=[("created", ASCENDING)]
        )
        return _dd(doc) if doc else None

    async def find_latest_inactive_device_deployment(
        self, tenant_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """Newest finished, live one of the device.

        History-deleted ones are skipped here rather than in the filter, which keeps the
        query on the (active, deviceid, created) index.
        """
        cursor = (
            self._c(DEVICE_DEPLOYMENTS, tenant_id)
            .find({"active": False, "deviceid": device_id}, projection={"image": 0})
            .sort([("created", DESCENDING)])
            .limit(_HISTORY_PROBE)
        )
        async for doc in cursor:
            if doc.get("slot", "") == "":
                return _dd(doc)
        return None

    async def get_device_deployment(
        self, tenant_id: str, deployment_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """The live one for the pair."""
        doc = await self._c(DEVICE_DEPLOYMENTS, tenant_id).find_one(
            {"deploymentid": deployment_id, "deviceid": device_id, **_LIVE}
        )
        return _dd(doc) if doc else None

    async def update_device_deployment_status(
        self,
        tenant_id: str,
        device_deployment: DeviceDeployment,
        *,
        status: DeviceDeploymentStatus,
        substate: str | None = None,
        now: datetime,
    ) -> DeviceDeployment | None:
        """Compare-and-set on the status field (a plain update: cheaper than findAndModify)."""
        expected = device_deployment.status
        changes: dict[str, Any] = {"status": status, "active": status.active}
        if not status.active:
            changes["finished"] = now
        if substate is not None:
            changes["substate"] = substate
        if expected is DeviceDeploymentStatus.PENDING and status is not expected:
            changes["started"] = now
        stored = {k: (int(v) if k == "status" else v) for k, v in changes.items()}
        result = await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_one(
            {"_id": device_deployment.id, "status": int(expected)}, {"$set": stored}
        )
        if result.matched_count == 0:
            return None
        return device_deployment.model_copy(update=changes)

    async def restart_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> DeviceDeployment | None:
        """Compare-and-set on the status, back to pending for the next attempt."""
        changes: dict[str, Any] = {
            "status": DeviceDeploymentStatus.PENDING,
            "active": True,
            "request": None,
            "substate": "",
            "attempts": device_deployment.attempts + 1,
        }
        stored = {k: (int(v) if k == "status" else v) for k, v in changes.items()}
        result = await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_one(
            {"_id": device_deployment.id, "status": int(device_deployment.status)},
            {"$set": stored},
        )
        if result.matched_count == 0:
            return None
        return device_deployment.model_copy(update=changes)

    async def save_device_deployment_request(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> None:
        """Store the request (and device type) on the device deployment."""
        request = device_deployment.request
        await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_one(
            {"_id": device_deployment.id},
            {
                "$set": {
                    "request": request.model_dump() if request else None,
                    "device_type": device_deployment.device_type,
                }
            },
        )

    async def list_device_deployments(
        self,
        tenant_id: str,
        *,
        deployment_id: str | None = None,
        device_id: str | None = None,
        ids: Sequence[str] = (),
        statuses: Sequence[DeviceDeploymentStatus] | None = None,
        skip: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> tuple[list[DeviceDeployment], int]:
        """Find a page of live device deployments."""
        coll = self._c(DEVICE_DEPLOYMENTS, tenant_id)
        query: Document = dict(_LIVE)
        if deployment_id is not None:
            query["deploymentid"] = deployment_id
        if device_id is not None:
            query["deviceid"] = device_id
        if ids:
            query["_id"] = {"$in": list(ids)}
        if statuses is not None:
            query["status"] = {"$in": [int(s) for s in statuses]}
        order = DESCENDING if newest_first else ASCENDING
        sort = [("created", order), ("_id", order)] if device_id else [("deviceid", ASCENDING)]
        cursor = coll.find(query).sort(sort).skip(skip)
        if limit is not None:
            cursor = cursor.limit(limit)
        items = [_dd(d) async for d in cursor]
        if limit is None and skip == 0:
            return items, len(items)
        return items, await coll.count_documents(query, limit=_COUNT_CAP)

    async def abort_device_deployments(
        self, tenant_id: str, deployment_id: str, *, now: datetime
    ) -> None:
        """Active → aborted."""
        await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_many(
            {"deploymentid": deployment_id, "status": {"$in": _ACTIVE_INTS}},
            {
                "$set": {
                    "status": int(DeviceDeploymentStatus.ABORTED),
                    "active": False,
                    "finished": now,
                }
            },
        )

    async def count_device_deployments_by_status(
        self, tenant_id: str, deployment_id: str
    ) -> dict[str, int]:
        """Group the live device deployments by status."""
        cursor = await self._c(DEVICE_DEPLOYMENTS, tenant_id).aggregate(
            [
                {"$match": {"deploymentid": deployment_id, **_LIVE}},
                {"$group": {"_id": "$status", "count": {"$sum": 1}}},
            ]
        )
        counts = dict.fromkeys(STAT_NAMES, 0)
        async for row in cursor:
            counts[DeviceDeploymentStatus(row["_id"]).label] = int(row["count"])
        return counts

    async def delete_device_history(self, tenant_id: str, device_id: str, now: datetime) -> None:
        """Soft-delete finished ones; `slot` takes the id so the pair may live again."""
        await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_many(
            {"deviceid": device_id, "active": False, **_LIVE},
            [{"$set": {"deleted": {"$literal": now}, "slot": "$_id"}}],
        )

    async def save_log(
        self, tenant_id: str, deployment_id: str, device_id: str, messages: list[LogMessage]
    ) -> None:
        """Upsert the log document."""
        await self._c(LOGS, tenant_id).update_one(
            {"deploymentid": deployment_id, "deviceid": device_id},
            {"$set": {"messages": [m.model_dump() for m in messages]}},
            upsert=True,
        )

    async def get_log(
        self, tenant_id: str, deployment_id: str, device_id: str
    ) -> list[LogMessage] | None:
        """Find the log document."""
        doc = await self._c(LOGS, tenant_id).find_one(
            {"deploymentid": deployment_id, "deviceid": device_id}
        )
        if doc is None:
            return None
        return [LogMessage(**m) for m in doc.get("messages") or []]

    async def set_log_available(self, tenant_id: str, deployment_id: str, device_id: str) -> None:
        """Set the `log` flag."""
        await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_one(
            {"deploymentid": deployment_id, "deviceid": device_id, **_LIVE},
            {"$set": {"log": True}},
        )

    async def save_last_status(self, tenant_id: str, last: LastDeviceDeployment) -> None:
        """Upsert per device."""
        await self._c(LAST_STATUS, tenant_id).update_one(
            {"device_id": last.device_id}, {"$set": last.model_dump()}, upsert=True
        )

    async def last_statuses(
        self, tenant_id: str, device_ids: Sequence[str]
    ) -> list[LastDeviceDeployment]:
        """Find by device ids."""
        cursor = self._c(LAST_STATUS, tenant_id).find({"device_id": {"$in": list(device_ids)}})
        fields = LastDeviceDeployment.model_fields
        return [
            LastDeviceDeployment(**{k: v for k, v in d.items() if k in fields})
            async for d in cursor
        ]

    # limits, settings, jobs -----------------------------------------------------------

    async def get_limit(self, tenant_id: str, name: str) -> int:
        """Find a limit."""
        doc = await self._c(LIMITS, tenant_id).find_one({"name": name})
        return int(doc.get("value", 0)) if doc else 0

    async def set_limit(self, tenant_id: str, name: str, value: int) -> None:
        """Upsert a limit."""
        await self._c(LIMITS, tenant_id).update_one(
            {"name": name}, {"$set": {"value": value}}, upsert=True
        )

    async def get_storage_settings(self, tenant_id: str) -> dict[str, Any] | None:
        """Find the settings document."""
        doc = await self._c(SETTINGS, tenant_id).find_one({})
        if doc is None:
            return None
        value = doc.get("storage")
        return dict(value) if isinstance(value, dict) else None

    async def set_storage_settings(self, tenant_id: str, settings: dict[str, Any] | None) -> None:
        """Upsert (or clear) the settings document."""
        coll = self._c(SETTINGS, tenant_id)
        if settings is None:
            await coll.delete_one({})
        else:
            await coll.update_one({}, {"$set": {"storage": settings}}, upsert=True)

    async def insert_job(self, job: GenerateJob) -> None:
        """Insert a job document."""
        doc = job.model_dump(exclude={"id", "tenant_id"})
        await self._c(JOBS, job.tenant_id).insert_one({"_id": job.id, **doc})

    async def get_job(self, tenant_id: str, job_id: str) -> GenerateJob | None:
        """Find a job."""
        doc = await self._c(JOBS, tenant_id).find_one({"_id": job_id})
        return _job(doc) if doc else None

    async def set_job_state(
        self, tenant_id: str, job_id: str, state: JobState, *, error: str = ""
    ) -> None:
        """Update a job's state."""
        await self._c(JOBS, tenant_id).update_one(
            {"_id": job_id}, {"$set": {"state": state, "error": error}}
        )

    async def unfinished_jobs(self) -> list[GenerateJob]:
        """Jobs of every tenant still pending or processing.

        The one query spanning tenants: start-up recovery must see every tenant's jobs.
        """
        cursor = self._db[JOBS].find(
            {"tenant_id": {"$exists": True}, "state": {"$in": ["pending", "processing"]}}
        )
        return [_job(d) async for d in cursor]

    async def insert_intent(self, intent: UploadIntent) -> None:
        """Insert an intent document."""
        doc = intent.model_dump(exclude={"id", "tenant_id"})
        await self._c(UPLOADS, intent.tenant_id).insert_one({"_id": intent.id, **doc})

    async def get_intent(self, tenant_id: str, intent_id: str) -> UploadIntent | None:
        """Find an intent."""
        doc = await self._c(UPLOADS, tenant_id).find_one({"_id": intent_id})
        return _intent(doc) if doc else None

    async def claim_intent(
        self, tenant_id: str, intent_id: str, *, from_state: JobState, to_state: JobState
    ) -> UploadIntent | None:
        """Compare-and-set the state."""
        doc = await self._c(UPLOADS, tenant_id).find_one_and_update(
            {"_id": intent_id, "state": from_state},
            {"$set": {"state": to_state}},
            return_document=ReturnDocument.AFTER,
        )
        return _intent(doc) if doc else None

    async def set_intent_state(
        self, tenant_id: str, intent_id: str, state: JobState, *, error: str = ""
    ) -> None:
        """Update an intent's state."""
        await self._c(UPLOADS, tenant_id).update_one(
            {"_id": intent_id}, {"$set": {"state": state, "error": error}}
        )

    async def unfinished_intents(self) -> list[UploadIntent]:
        """Intents of every tenant still processing (see `unfinished_jobs`)."""
        cursor = self._db[UPLOADS].find({"tenant_id": {"$exists": True}, "state": "processing"})
        return [_intent(d) async for d in cursor]


def _job(doc: Mapping[str, Any]) -> GenerateJob:
    fields = GenerateJob.model_fields
    return GenerateJob(id=str(doc["_id"]), **{k: v for k, v in doc.items() if k in fields})


def _intent(doc: Mapping[str, Any]) -> UploadIntent:
    fields = UploadIntent.model_fields
    return UploadIntent(id=str(doc["_id"]), **{k: v for k, v in doc.items() if k in fields})
