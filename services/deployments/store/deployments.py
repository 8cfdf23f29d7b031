"""Deployments in Mongo: the deployment documents, their counters, aborts and recounts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, transaction
from common.core.outbox import Effect
from services.deployments.models import (
    ACTIVE_STATUSES,
    STAT_NAMES,
    Deployment,
    DeviceDeploymentStatus,
)
from services.deployments.store import DeploymentFilter, DeploymentStore, DuplicateDeployment
from services.deployments.store.counters import DeploymentCounters
from services.deployments.store.device_deployments import LIVE
from services.deployments.store.indexes import (
    DEPLOYMENT_STATS,
    DEPLOYMENTS,
    DEVICE_DEPLOYMENTS,
    STATS_BY_STATUS,
)

__all__ = ["MongoDeploymentStore", "search_tokens"]

_TOKEN_SPLIT: Final = re.compile(r"[^\w]+")
_ACTIVE_INTS: Final = sorted(int(s) for s in ACTIVE_STATUSES)
_COUNTERS: Final = ("stats", "device_count", "total_size")
_DEPLOYMENT_FIELDS: Final = frozenset(Deployment.model_fields) - set(_COUNTERS)


def search_tokens(*texts: str) -> list[str]:
    """Lower-cased word tokens of the texts (the free-text search index of deployments)."""
    tokens: list[str] = []
    for text in texts:
        for token in _TOKEN_SPLIT.split(text.lower()):
            if token and token not in tokens:
                tokens.append(token)
    return tokens


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


class MongoDeploymentStore(DeploymentCounters, DeploymentStore):
    """Deployments with their counters (a document apart, written by every status move)."""

    async def insert_deployment(
        self,
        tenant_id: str,
        deployment: Deployment,
        *,
        checksum: str,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Insert the deployment, its counters and `effects` together (one transaction)."""
        doc = _deployment_doc(deployment)
        doc["constructor_checksum"] = checksum
        try:
            async with transaction(self._db.client) as session:
                await self._c(DEPLOYMENTS, tenant_id).insert_one(doc, session=session)
                await self._c(DEPLOYMENT_STATS, tenant_id).insert_one(
                    _stats_doc(deployment), session=session
                )
                await self._outbox.add(effects, session=session)
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

    async def abort_deployment(
        self,
        tenant_id: str,
        deployment_id: str,
        *,
        now: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Abort the active device deployments, recount, finish and record `effects`, in one
        transaction."""

        async def work(session: AsyncClientSession) -> None:
            await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_many(
                {"deploymentid": deployment_id, "status": {"$in": _ACTIVE_INTS}},
                {
                    "$set": {
                        "status": int(DeviceDeploymentStatus.ABORTED),
                        "active": False,
                        "finished": now,
                    }
                },
                session=session,
            )
            # NOTE: as in Mender, an aborted deployment's statistics count its device
            # deployments only: devices that never asked for it are in none of them.
            stats = await self._status_counts(
                tenant_id, deployment_id, live_only=True, session=session
            )
            await self._c(DEPLOYMENTS, tenant_id).update_one(
                {"_id": deployment_id},
                {"$set": {"status": "finished", "active": False, "finished": now}},
                session=session,
            )
            await self._c(DEPLOYMENT_STATS, tenant_id).update_one(
                {"_id": deployment_id},
                # No device may start a finished deployment any more.
                {"$set": {"stats": stats, "status": "finished", "room": 0}},
                session=session,
            )
            await self._outbox.add(effects, session=session)

        await self._serially(tenant_id, deployment_id, work)

    async def active_device_lists(self, tenant_id: str) -> dict[str, list[str]]:
        """The device list of each of a tenant's active (unfinished) deployments, by id."""
        cursor = self._c(DEPLOYMENTS, tenant_id).find(
            {"active": True}, projection={"device_list": 1}
        )
        return {str(d["_id"]): list(d.get("device_list") or []) async for d in cursor}

    async def unfinished_deployments(self) -> list[tuple[str, str]]:
        """(tenant, id) of the deployments of every tenant not finished yet.

        Spans tenants, like `claimable_jobs`: start-up recovery looks at all of them.
        """
        cursor = self._db[DEPLOYMENT_STATS].find(
            {"status": {"$in": ["pending", "inprogress"]}, "tenant_id": {"$exists": True}},
            projection={"tenant_id": 1},
            hint=STATS_BY_STATUS,
        )
        return [(str(d["tenant_id"]), str(d["_id"])) async for d in cursor]

    async def recount_stats(
        self, tenant_id: str, deployment_id: str
    ) -> tuple[dict[str, int], dict[str, int]] | None:
        """Recount an unfinished deployment's statistics from its device deployments.

        Every device deployment counts, history-deleted ones too (as in the counters);
        devices that have not asked for the deployment yet are pending. One transaction, so
        device deployments and counters are read as the last committed change left them.
        """

        async def work(
            session: AsyncClientSession,
        ) -> tuple[dict[str, int], dict[str, int]] | None:
            stats_coll = self._c(DEPLOYMENT_STATS, tenant_id)
            counters = await stats_coll.find_one(
                {"_id": deployment_id, "status": {"$ne": "finished"}}, session=session
            )
            if counters is None:
                return None
            counts = await self._status_counts(
                tenant_id, deployment_id, live_only=False, session=session
            )
            started = sum(n for name, n in counts.items() if name != "pending")
            counts["pending"] = int(counters.get("max_devices", 0)) - started
            stored = counters.get("stats") or {}
            before = {name: int(stored.get(name, 0)) for name in STAT_NAMES}
            if counts == before:
                return None
            # Read in this transaction: the write cannot miss, and the counters after it are
            # what was read with the new statistics.
            await stats_coll.update_one(
                {"_id": deployment_id}, {"$set": {"stats": counts}}, session=session
            )
            updated = {**counters, "stats": counts}
            await self._advance(tenant_id, deployment_id, updated, session=session)
            return before, counts

        return await self._serially(tenant_id, deployment_id, work)

    async def _status_counts(
        self,
        tenant_id: str,
        deployment_id: str,
        *,
        live_only: bool,
        session: AsyncClientSession,
    ) -> dict[str, int]:
        """Status label → number of the deployment's (live) device deployments."""
        match: Document = {"deploymentid": deployment_id}
        if live_only:
            match.update(LIVE)
        cursor = await self._c(DEVICE_DEPLOYMENTS, tenant_id).aggregate(
            [{"$match": match}, {"$group": {"_id": "$status", "count": {"$sum": 1}}}],
            session=session,
        )
        counts = dict.fromkeys(STAT_NAMES, 0)
        async for row in cursor:
            counts[DeviceDeploymentStatus(row["_id"]).label] = int(row["count"])
        return counts
