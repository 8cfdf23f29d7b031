"""The auditlogs store on MongoDB: one document per event in `logs`, in its wire shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection
from services.auditlogs.models import AuditLog, LogFilter
from services.auditlogs.store.indexes import LOGS

__all__ = ["MongoStore", "log_query"]

_BATCH: Final = 1000  # events read per round trip when streaming an export
_STORED_ONLY: Final = ("_id", "tenant_id", "expire_ts")


def log_query(filter_: LogFilter) -> Document:
    """The query of a filter, without the tenant (which every collection access adds)."""
    query: Document = {}
    exact = {
        "actor.id": filter_.actor_id,
        "actor.email": filter_.actor_email,
        "object.id": filter_.object_id,
        "object.type": filter_.object_type,
        "object.deployment.name": filter_.object_deployment_name,
    }
    query.update({field: value for field, value in exact.items() if value is not None})
    if filter_.object_deployment_name is not None:
        # Only deployments have deployment names: saying so lets the query use the index.
        query.setdefault("object.type", "deployment")
    bounds: Document = {}
    if filter_.since is not None:
        bounds["$gte"] = filter_.since
    if filter_.until is not None:
        bounds["$lt"] = filter_.until
    if bounds:
        query["time"] = bounds
    return query


def _log(doc: Mapping[str, Any]) -> AuditLog:
    return AuditLog.model_validate({k: v for k, v in doc.items() if k not in _STORED_ONLY})


class MongoStore:
    """Audit events on one Mongo database; every query is tenant-scoped."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    def _logs(self, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[LOGS], tenant_id)

    async def insert(
        self, tenant_id: str, log: AuditLog, *, event_id: str, expire_at: datetime
    ) -> bool:
        """Record an event under its id; False when that id is already recorded."""
        doc = log.model_dump(by_alias=True, exclude_none=True)
        doc.update(_id=event_id, expire_ts=expire_at)
        try:
            await self._logs(tenant_id).insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    def _cursor(self, tenant_id: str, filter_: LogFilter) -> Any:
        order = ASCENDING if filter_.ascending else DESCENDING
        # `_id` breaks ties between events of the same millisecond, so pages never overlap.
        return (
            self._logs(tenant_id).find(log_query(filter_)).sort([("time", order), ("_id", order)])
        )

    async def find(
        self, tenant_id: str, filter_: LogFilter, *, skip: int, limit: int
    ) -> list[AuditLog]:
        """Return one page of the matching events, in the filter's order of time."""
        docs = await self._cursor(tenant_id, filter_).skip(skip).limit(limit).to_list()
        return [_log(doc) for doc in docs]

    async def count(self, tenant_id: str, filter_: LogFilter) -> int:
        """Count the matching events."""
        return await self._logs(tenant_id).count_documents(log_query(filter_))

    async def stream(
        self, tenant_id: str, filter_: LogFilter, *, limit: int | None
    ) -> AsyncIterator[AuditLog]:
        """Yield the matching events in order, a batch at a time (at most `limit`)."""
        cursor = self._cursor(tenant_id, filter_).batch_size(_BATCH)
        if limit is not None:
            cursor = cursor.limit(limit)
        try:
            async for doc in cursor:
                yield _log(doc)
        finally:
            await cursor.close()

    async def delete_tenant(self, tenant_id: str) -> int:
        """Delete every event of a tenant; how many there were."""
        result = await self._logs(tenant_id).delete_many({})
        return result.deleted_count
