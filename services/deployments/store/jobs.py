"""Limits, per-tenant settings, generation jobs and direct-upload intents in Mongo."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection
from services.deployments.models import GenerateJob, JobState, UploadIntent
from services.deployments.store import JobStore
from services.deployments.store.base import MongoCollections
from services.deployments.store.indexes import ARTIFACTS, JOBS, LIMITS, LOCKS, SETTINGS, UPLOADS

__all__ = ["MongoJobStore"]

# MongoDB's own index on `_id`, named by queries that span tenants.
_ID_INDEX: Final = "_id_"


# A job can be claimed where nobody holds it: no lease, or one that has lapsed.
def _lapsed(now: datetime) -> Document:
    return {"lease_until": {"$not": {"$gt": now}}}


async def _claim(
    coll: TenantCollection,
    work_id: str,
    states: Sequence[JobState],
    *,
    owner: str,
    now: datetime,
    until: datetime,
) -> Document | None:
    """The work after this claim, or None if another holds it or it is in no such state.

    A claiming write, then a read of this very lease: no `findAndModify`, which the embedded
    server answers by scanning the collection.
    """
    claimed = await coll.update_one(
        {"_id": work_id, "state": {"$in": list(states)}, **_lapsed(now)},
        {
            "$set": {"state": "processing", "lease_owner": owner, "lease_until": until},
            "$inc": {"claims": 1},
        },
    )
    if not claimed.matched_count:
        return None
    return await coll.find_one({"_id": work_id, "lease_owner": owner, "lease_until": until})


async def _renew(coll: TenantCollection, work_id: str, *, owner: str, until: datetime) -> bool:
    result = await coll.update_one(
        {"_id": work_id, "state": "processing", "lease_owner": owner},
        {"$set": {"lease_until": until}},
    )
    return result.matched_count == 1


async def _finish(
    coll: TenantCollection, work_id: str, state: JobState, *, owner: str, error: str
) -> bool:
    result = await coll.update_one(
        {"_id": work_id, "state": "processing", "lease_owner": owner},
        {"$set": {"state": state, "error": error, "lease_until": None}},
    )
    return result.matched_count == 1


def _job(doc: Mapping[str, Any]) -> GenerateJob:
    fields = GenerateJob.model_fields
    return GenerateJob(id=str(doc["_id"]), **{k: v for k, v in doc.items() if k in fields})


def _intent(doc: Mapping[str, Any]) -> UploadIntent:
    fields = UploadIntent.model_fields
    return UploadIntent(id=str(doc["_id"]), **{k: v for k, v in doc.items() if k in fields})


class MongoJobStore(MongoCollections, JobStore):
    """Limits, storage settings and the artifact jobs of every tenant."""

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

    async def claim_job(
        self, tenant_id: str, job_id: str, *, owner: str, now: datetime, until: datetime
    ) -> GenerateJob | None:
        """Take up an unfinished job nobody holds."""
        doc = await _claim(
            self._c(JOBS, tenant_id),
            job_id,
            ("pending", "processing"),
            owner=owner,
            now=now,
            until=until,
        )
        return _job(doc) if doc else None

    async def renew_job(self, tenant_id: str, job_id: str, *, owner: str, until: datetime) -> bool:
        """Extend the lease."""
        return await _renew(self._c(JOBS, tenant_id), job_id, owner=owner, until=until)

    async def finish_job(
        self, tenant_id: str, job_id: str, state: JobState, *, owner: str, error: str = ""
    ) -> bool:
        """Record the outcome."""
        coll = self._c(JOBS, tenant_id)
        return await _finish(coll, job_id, state, owner=owner, error=error)

    async def claimable_jobs(self, now: datetime) -> list[tuple[str, str]]:
        """(tenant, id) of every tenant's unfinished jobs nobody holds.

        One of the queries spanning tenants: every replica looks for every tenant's jobs.
        """
        cursor = self._db[JOBS].find(
            {
                "tenant_id": {"$exists": True},
                "state": {"$in": ["pending", "processing"]},
                **_lapsed(now),
            },
            projection={"tenant_id": 1},
        )
        return [(str(d["tenant_id"]), str(d["_id"])) async for d in cursor]

    async def artifact_tenants(self, artifact_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(tenant, id) of the artifacts with these ids, in whichever tenant.

        Spans tenants (see `claimable_jobs`): the storage sweep looks at every object.
        """
        cursor = self._db[ARTIFACTS].find(
            {"_id": {"$in": list(artifact_ids)}, "tenant_id": {"$exists": True}},
            projection={"tenant_id": 1},
            hint=_ID_INDEX,
        )
        return [(str(d["tenant_id"]), str(d["_id"])) async for d in cursor]

    async def unfinished_upload_keys(self, ids: Sequence[str]) -> list[str]:
        """Object keys of the unfinished jobs and upload intents with these ids, any tenant."""
        query: Document = {
            "_id": {"$in": list(ids)},
            "tenant_id": {"$exists": True},
            "state": {"$in": ["pending", "processing"]},
        }
        jobs = self._db[JOBS].find(query, projection={"raw_key": 1}, hint=_ID_INDEX)
        intents = self._db[UPLOADS].find(query, projection={"key": 1}, hint=_ID_INDEX)
        return [str(d["raw_key"]) async for d in jobs] + [str(d["key"]) async for d in intents]

    async def insert_intent(self, intent: UploadIntent) -> None:
        """Insert an intent document."""
        doc = intent.model_dump(exclude={"id", "tenant_id"})
        await self._c(UPLOADS, intent.tenant_id).insert_one({"_id": intent.id, **doc})

    async def get_intent(self, tenant_id: str, intent_id: str) -> UploadIntent | None:
        """Find an intent."""
        doc = await self._c(UPLOADS, tenant_id).find_one({"_id": intent_id})
        return _intent(doc) if doc else None

    async def claim_intent(
        self,
        tenant_id: str,
        intent_id: str,
        *,
        from_state: JobState,
        owner: str,
        now: datetime,
        until: datetime,
    ) -> UploadIntent | None:
        """Move an intent from `from_state` to processing, nobody holding it."""
        doc = await _claim(
            self._c(UPLOADS, tenant_id), intent_id, (from_state,), owner=owner, now=now, until=until
        )
        return _intent(doc) if doc else None

    async def renew_intent(
        self, tenant_id: str, intent_id: str, *, owner: str, until: datetime
    ) -> bool:
        """Extend the lease."""
        return await _renew(self._c(UPLOADS, tenant_id), intent_id, owner=owner, until=until)

    async def finish_intent(
        self, tenant_id: str, intent_id: str, state: JobState, *, owner: str, error: str = ""
    ) -> bool:
        """Record the outcome."""
        coll = self._c(UPLOADS, tenant_id)
        return await _finish(coll, intent_id, state, owner=owner, error=error)

    async def claim_lock(self, name: str, *, owner: str, now: datetime, until: datetime) -> bool:
        """Take (or keep) a named lease, unless another holds it."""
        try:
            await self._c(LOCKS, "").update_one(
                {"_id": name, "$or": [_lapsed(now), {"lease_owner": owner}]},
                {"$set": {"lease_owner": owner, "lease_until": until}},
                upsert=True,
            )
        except DuplicateKeyError:  # it exists, held by another process
            return False
        return True

    async def claimable_intents(self, now: datetime) -> list[tuple[str, str]]:
        """(tenant, id) of every tenant's intents left processing by a holder that is gone."""
        cursor = self._db[UPLOADS].find(
            {"tenant_id": {"$exists": True}, "state": "processing", **_lapsed(now)},
            projection={"tenant_id": 1},
        )
        return [(str(d["tenant_id"]), str(d["_id"])) async for d in cursor]
