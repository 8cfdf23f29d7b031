"""MongoDB implementation of the inventory store: one document per device.

The document (`store/documents.py`) holds the device's attributes by key, its status
`revision`, `tags_etag`, `created_ts`/`updated_ts`, `version` and `text`: the keywords of
its id, group and string values of identity, inventory and tags attributes.

A write to one device reads it by key, checks the write's conditions on it (per-scope
limits, If-Unmodified-Since, the tags ETag, an unchanged report), computes its attributes
and keywords after the write, and writes them with plain update operators filtered on
`_id` and the `version` read: if another write came in between, it reads and computes
again. A device that does not exist is inserted; a duplicate key means another request
created it meanwhile, and the write is computed again from it. So the keywords are always
those of the stored attributes, and the database does not recompute them; only the group
changes of many devices at once (`set_group`, `unset_group`) are update pipelines that do.

Every filter names `_id` and plain equalities only, so the database looks the device up by
its key at any fleet size: an `$expr` or `$or` in a filter makes it scan the whole
collection. Bulk status changes read their devices with one `$in` on `_id` and write them
in one bulk write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from common.core.errors import Conflict
from common.core.mongo import DUPLICATE_KEY, Document, TenantCollection
from services.inventory.models import (
    Attribute,
    AttributeRef,
    Device,
    DeviceChange,
    DeviceQuery,
    FilterAttribute,
    Predicate,
    Regex,
    StatusStatistics,
    TierCounts,
    UpdateResult,
    WriteOutcome,
)
from services.inventory.store import DataStore
from services.inventory.store.documents import (
    DIGEST,
    GROUP_KEY,
    TEXT_SCOPES,
    UPDATED_KEY,
    VERSION,
    attribute_key,
    new_document,
    system,
    update,
    versioned,
)
from services.inventory.store.indexes import DEVICES, TENANTS

__all__ = ["MongoStore", "attribute_key", "search_filter", "value_path"]

_GROUP_PATH: Final = f"attributes.{GROUP_KEY}.value"
_STATUS_PATH: Final = "attributes.identity-status.value"
_CHECK_IN_KEY: Final = attribute_key("system", "check_in_time")
_TIERS: Final = ("standard", "micro", "system")
_WRITE_ATTEMPTS: Final = 3
_NEXT_VERSION: Final = {"$add": [{"$ifNull": [f"${VERSION}", 0]}, 1]}


def value_path(ref: AttributeRef) -> str:
    """The document path holding an attribute's value (`_id` for `identity/id`)."""
    if ref.is_device_id:
        return "_id"
    return f"attributes.{attribute_key(ref.scope, ref.name)}.value"


def _tokens(expr: str) -> Document:
    # Mirrors models.text_tokens: ASCII letters and digits, lower-cased.
    return {
        "$map": {
            "input": {"$regexFindAll": {"input": {"$toLower": expr}, "regex": "[a-z0-9]+"}},
            "as": "m",
            "in": "$$m.match",
        }
    }


_ALL_ATTRIBUTES: Final = {"$objectToArray": {"$ifNull": ["$attributes", {}]}}

# The keywords of the document as it stands at this point of the pipeline (as
# `documents.keywords` computes them), for the group changes of many devices at once.
_TEXT_EXPR: Final = {
    "$setUnion": [
        _tokens("$_id"),
        {
            "$reduce": {
                "input": {
                    "$filter": {
                        "input": _ALL_ATTRIBUTES,
                        "as": "a",
                        "cond": {
                            "$and": [
                                {
                                    "$or": [
                                        {"$in": ["$$a.v.scope", list(TEXT_SCOPES)]},
                                        {"$eq": ["$$a.k", GROUP_KEY]},
                                    ]
                                },
                                {"$eq": [{"$type": "$$a.v.value"}, "string"]},
                            ]
                        },
                    }
                },
                "initialValue": [],
                "in": {"$concatArrays": ["$$value", _tokens("$$this.v.value")]},
            }
        },
    ]
}
_TEXT_STAGE: Final = {"$set": {"text": _TEXT_EXPR}}
_BUMP_STAGE: Final = {"$set": {VERSION: _NEXT_VERSION}}


def _device(doc: Document) -> Device:
    attributes = []
    updated = None
    for key, raw in (doc.get("attributes") or {}).items():
        if not isinstance(raw, dict):
            continue
        attributes.append(
            Attribute.model_construct(
                name=raw.get("name", key),
                scope=raw.get("scope", ""),
                value=raw.get("value"),
                description=raw.get("description"),
                timestamp=raw.get("timestamp"),
            )
        )
        if key == UPDATED_KEY:
            updated = raw.get("value")
    return Device.model_construct(
        id=doc["_id"],
        attributes=tuple(attributes),
        updated_ts=updated if isinstance(updated, datetime) else None,
        revision=doc.get("revision", 0),
        tags_etag=doc.get("tags_etag"),
    )


def _new_keys_by_scope(change: DeviceChange) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for attr in change.set:
        keys.setdefault(attr.scope, set()).add(attribute_key(attr.scope, attr.name))
    return keys


def _over_limit_up_front(change: DeviceChange) -> bool:
    return any(
        scope in change.limits and len(keys) > change.limits[scope]
        for scope, keys in _new_keys_by_scope(change).items()
    )


def _unchanged(doc: Document, change: DeviceChange) -> bool:
    """Whether a report is the one stored, and the device was updated recently enough."""
    if change.report_digest is None or change.skip_if_updated_after is None:
        return False
    updated = doc.get("updated_ts")
    return (
        doc.get(DIGEST) == change.report_digest
        and isinstance(updated, datetime)
        and updated > change.skip_if_updated_after
    )


def _why_not_applied(doc: Document | None, change: DeviceChange) -> WriteOutcome | None:
    """Tell which condition keeps a write from applying to the device as read; None if none."""
    if doc is None:
        return None if change.create else WriteOutcome.NOT_FOUND
    if change.if_tags_etag is not None and doc.get("tags_etag") != change.if_tags_etag:
        return WriteOutcome.ETAG_MISMATCH
    if change.if_unmodified_since is not None:
        updated = ((doc.get("attributes") or {}).get(UPDATED_KEY) or {}).get("value")
        if isinstance(updated, datetime) and updated > change.if_unmodified_since:
            return WriteOutcome.PRECONDITION_FAILED
    attributes = doc.get("attributes") or {}
    for scope, keys in _new_keys_by_scope(change).items():
        limit = change.limits.get(scope)
        if limit is None or scope in change.replace_scopes:
            continue
        kept = sum(
            1
            for key, raw in attributes.items()
            if isinstance(raw, dict) and raw.get("scope") == scope and key not in keys
        )
        if kept + len(keys) > limit:
            return WriteOutcome.LIMIT_EXCEEDED
    return None


def _condition(pred: Predicate) -> Document:
    path = value_path(pred.attribute)
    if pred.operator == "$regex":
        regex = pred.value
        assert isinstance(regex, Regex)
        condition: Document = {"$regex": regex.pattern}
        if regex.options:
            condition["$options"] = regex.options
        return {path: condition}
    if pred.operator == "$ltne":
        # Less than (any of the bounds), or missing.
        below: list[Document] = [{path: {"$lt": bound}} for bound in pred.value]
        return {"$or": [*below, {path: {"$exists": False}}]}
    return {path: {pred.operator: pred.value}}


def search_filter(query: DeviceQuery) -> Document:
    """The Mongo filter of a device query (before tenant scoping).

    Conditions on different fields stay top-level (`{a: …, b: {$gt: …}}`) rather than under
    `$and`: MongoDB plans both alike, and the embedded server uses an index only for such
    flat filters.
    """
    conditions = [_condition(p) for p in query.predicates]
    if query.text_tokens is not None:
        if len(query.text_tokens) == 1:
            conditions.append({"text": query.text_tokens[0]})
        elif query.text_tokens:
            conditions.append({"text": {"$all": list(query.text_tokens)}})
        else:
            # Text without a single keyword matches nothing (as a text search would).
            conditions.append({"_id": {"$in": []}})
    filter_: Document = {}
    rest: list[Document] = []
    for condition in conditions:
        ((path, value),) = condition.items()
        current = filter_.get(path)
        if current is None:
            filter_[path] = value
        elif (
            isinstance(current, dict) and isinstance(value, dict) and not set(current) & set(value)
        ):
            filter_[path] = {**current, **value}
        else:
            rest.append(condition)
    if rest:
        filter_["$and"] = rest
    return filter_


async def _write_each(
    coll: TenantCollection, updates: list[tuple[Document, Document]], inserts: list[Document]
) -> tuple[int, int, set[str]]:
    """One bulk write: how many updates matched, how many inserts were written, and the ids
    of the inserts that found their id taken."""
    try:
        result = await coll.write_each(updates, inserts=inserts)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY or e["index"] >= len(inserts) for e in errors):
            raise
        taken = {inserts[e["index"]]["_id"] for e in errors}
        return exc.details["nMatched"], exc.details["nInserted"], taken
    return result.matched_count, result.inserted_count, set()


def _status_change(now: datetime, status: str | None, check_in: datetime | None) -> DeviceChange:
    """Identity `status` (if given) and `system/check_in_time` (if given)."""
    attributes = []
    if status is not None:
        attributes.append(Attribute(name="status", scope="identity", value=status))
    if check_in is not None:
        attributes.append(Attribute(name="check_in_time", scope="system", value=check_in))
    return DeviceChange(now=now, set=tuple(attributes))


def _later_check_in(doc: Document, check_in: datetime | None) -> bool:
    """Whether `check_in` is later than the device's stored check-in time (or it has none)."""
    if check_in is None:
        return False
    stored = ((doc.get("attributes") or {}).get(_CHECK_IN_KEY) or {}).get("value")
    return not isinstance(stored, datetime) or stored < check_in


class MongoStore(DataStore):
    """Device inventories in the `devices` collection, scoped by tenant."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._devices = db[DEVICES]
        self._tenants = db[TENANTS]

    def _coll(self, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._devices, tenant_id)

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """Return one device, or None."""
        doc = await self._coll(tenant_id).find_one({"_id": device_id}, {"text": 0})
        return None if doc is None else _device(doc)

    async def write_device(
        self, tenant_id: str, device_id: str, change: DeviceChange
    ) -> WriteOutcome:
        """Apply an attribute change to one device atomically, subject to its conditions."""
        if _over_limit_up_front(change):
            return WriteOutcome.LIMIT_EXCEEDED
        coll = self._coll(tenant_id)
        for _ in range(_WRITE_ATTEMPTS):
            doc = await coll.find_one({"_id": device_id})
            if doc is not None and _unchanged(doc, change):
                return WriteOutcome.OK
            outcome = _why_not_applied(doc, change)
            if outcome is not None:
                return outcome
            if doc is None:
                try:
                    await coll.insert_one(new_document(device_id, change))
                except DuplicateKeyError:
                    # Created meanwhile (or the id is another tenant's): read it again.
                    continue
                return WriteOutcome.OK
            # Applies only to the device as read; a write in between: read it again.
            if (await coll.update_one(versioned(doc), update(doc, change))).matched_count:
                return WriteOutcome.OK
        raise Conflict("the device id is taken or the device is being changed concurrently")

    async def set_statuses(
        self,
        tenant_id: str,
        *,
        status: str,
        devices: Sequence[tuple[str, int]],
        now: datetime,
        check_ins: Mapping[str, datetime] | None = None,
    ) -> UpdateResult:
        """Set identity `status` on each (id, revision) whose stored revision is older, and
        `system/check_in_time` from `check_ins` where it is later than the stored one."""
        coll = self._coll(tenant_id)
        check_ins = check_ins or {}
        wanted: dict[str, int] = {}
        for device_id, revision in devices:
            wanted[device_id] = max(revision, wanted.get(device_id, revision))
        matched = created = 0
        collided: set[str] = set()
        for attempt in range(_WRITE_ATTEMPTS + 1):
            if not wanted:
                break
            # One read and one bulk write for the whole list (the outbox merges many devices
            # into one call); again for the devices another write came in between.
            docs = {doc["_id"]: doc async for doc in coll.find({"_id": {"$in": list(wanted)}})}
            inserts: list[Document] = []
            updates: list[tuple[Document, Document]] = []
            for device_id, revision in list(wanted.items()):
                doc = docs.get(device_id)
                check_in = check_ins.get(device_id)
                if doc is None and device_id not in collided:
                    change = _status_change(now, status, check_in)
                    inserts.append(new_document(device_id, change, revision))
                elif doc is None:
                    del wanted[device_id]  # the id is another tenant's
                elif doc.get("revision", 0) < revision:
                    check_in = check_in if _later_check_in(doc, check_in) else None
                    change = _status_change(now, status, check_in)
                    updates.append((versioned(doc), update(doc, change, revision)))
                elif _later_check_in(doc, check_in):
                    # An older status than the stored one, with a check-in still news.
                    change = _status_change(now, None, check_in)
                    updates.append((versioned(doc), update(doc, change)))
                else:
                    del wanted[device_id]  # as new as this or newer
            if not wanted:
                break
            if attempt == _WRITE_ATTEMPTS:
                raise Conflict("devices are being changed concurrently")
            n_matched, n_inserted, collided = await _write_each(coll, updates, inserts)
            matched += n_matched
            created += n_inserted
            if n_matched == len(updates) and not collided:
                break
            # Those written are now as new as asked, and drop out on the next read.
            for doc in inserts:
                if doc["_id"] not in collided:
                    del wanted[doc["_id"]]
        return UpdateResult(matched_count=matched, created_count=created, updated_count=matched)

    async def delete_devices(self, tenant_id: str, device_ids: Sequence[str]) -> int:
        """Delete devices; return how many existed."""
        if not device_ids:
            return 0
        result = await self._coll(tenant_id).delete_many({"_id": {"$in": list(device_ids)}})
        return result.deleted_count

    async def search(self, tenant_id: str, query: DeviceQuery) -> tuple[list[Device], int]:
        """Return one page of matching devices and the total number of matches."""
        coll = self._coll(tenant_id)
        filter_ = search_filter(query)
        projection: Document = {"text": 0}
        if query.projection is not None:
            projection = {f"attributes.{UPDATED_KEY}": 1}
            for ref in query.projection:
                if not ref.is_device_id:
                    projection[f"attributes.{attribute_key(ref.scope, ref.name)}"] = 1
        sort = [
            (value_path(k.attribute), ASCENDING if k.ascending else DESCENDING) for k in query.sort
        ]
        if not any(path == "_id" for path, _ in sort):
            sort.append(("_id", ASCENDING))
        cursor = coll.find(filter_, projection).sort(sort)
        docs = await cursor.skip(query.skip).limit(query.limit).to_list()
        total = await coll.count_documents(filter_)
        return [_device(d) for d in docs], total

    async def set_group(
        self, tenant_id: str, *, device_ids: Sequence[str], group: str
    ) -> UpdateResult:
        """Put existing devices into a group (matched = found, updated = moved)."""
        if not device_ids:
            return UpdateResult()
        result = await self._coll(tenant_id).update_many(
            {"_id": {"$in": list(device_ids)}},
            [
                # A device already in the group is left as it is (not counted as updated).
                {
                    "$set": {
                        VERSION: {
                            "$cond": [
                                {"$eq": [f"${_GROUP_PATH}", group]},
                                "$version",
                                _NEXT_VERSION,
                            ]
                        }
                    }
                },
                {"$set": {f"attributes.{GROUP_KEY}": {"$literal": system("group", group)}}},
                _TEXT_STAGE,
            ],
        )
        return UpdateResult(matched_count=result.matched_count, updated_count=result.modified_count)

    async def unset_group(
        self, tenant_id: str, *, group: str, device_ids: Sequence[str] | None = None
    ) -> UpdateResult:
        """Take devices (all of the group's when `device_ids` is None) out of a group."""
        filter_: Document = {_GROUP_PATH: group}
        if device_ids is not None:
            if not device_ids:
                return UpdateResult()
            filter_["_id"] = {"$in": list(device_ids)}
        result = await self._coll(tenant_id).update_many(
            filter_, [{"$unset": f"attributes.{GROUP_KEY}"}, _TEXT_STAGE, _BUMP_STAGE]
        )
        return UpdateResult(matched_count=result.matched_count, updated_count=result.modified_count)

    async def list_groups(self, tenant_id: str, *, status: str | None = None) -> list[str]:
        """Names of the groups in use, optionally among devices with an identity status."""
        filter_: Document = {_GROUP_PATH: {"$exists": True}}
        if status is not None:
            filter_ = {_STATUS_PATH: status, _GROUP_PATH: {"$exists": True}}
        groups = await self._coll(tenant_id).distinct(_GROUP_PATH, filter_)
        return sorted(g for g in groups if isinstance(g, str))

    async def list_group_devices(
        self, tenant_id: str, *, group: str, skip: int, limit: int
    ) -> tuple[list[str], int]:
        """One page of the ids of a group's devices and the group's size."""
        coll = self._coll(tenant_id)
        cursor = coll.find({_GROUP_PATH: group}, {"_id": 1}).sort("_id", ASCENDING)
        docs = await cursor.skip(skip).limit(limit).to_list()
        total = await coll.count_documents({_GROUP_PATH: group})
        return [d["_id"] for d in docs], total

    async def filter_attributes(
        self, tenant_id: str, *, sample: int, limit: int
    ) -> list[FilterAttribute]:
        """Attributes present on (a sample of) the devices, most common first."""
        cursor = await self._coll(tenant_id).aggregate(
            [
                {"$limit": sample},
                {"$project": {"_id": 0, "a": _ALL_ATTRIBUTES}},
                {"$unwind": "$a"},
                {
                    "$group": {
                        "_id": {"name": "$a.v.name", "scope": "$a.v.scope"},
                        "count": {"$sum": 1},
                    }
                },
                {"$sort": {"count": -1, "_id.scope": 1, "_id.name": 1}},
                {"$limit": limit},
            ]
        )
        return [
            FilterAttribute(name=row["_id"]["name"], scope=row["_id"]["scope"], count=row["count"])
            async for row in cursor
            if isinstance(row["_id"].get("name"), str) and isinstance(row["_id"].get("scope"), str)
        ]

    async def status_statistics(self, tenant_id: str) -> StatusStatistics:
        """Count accepted and pending devices per tier."""
        counts: dict[str, dict[str, int]] = {"accepted": {}, "pending": {}}
        cursor = await self._coll(tenant_id).aggregate(
            [
                {"$match": {_STATUS_PATH: {"$in": list(counts)}}},
                {
                    "$group": {
                        "_id": {
                            "status": f"${_STATUS_PATH}",
                            "tier": {"$ifNull": ["$attributes.system-tier.value", "standard"]},
                        },
                        "n": {"$sum": 1},
                    }
                },
            ],
        )
        async for row in cursor:
            tiers = counts.get(row["_id"].get("status"))
            tier = row["_id"].get("tier")
            if tiers is not None and tier in _TIERS:
                tiers[tier] = row["n"]
        return StatusStatistics(
            accepted=TierCounts(**counts["accepted"]), pending=TierCounts(**counts["pending"])
        )

    async def add_tenant(self, tenant_id: str, *, now: datetime) -> None:
        """Record a tenant (idempotent)."""
        await TenantCollection(self._tenants, tenant_id).update_one(
            {"_id": tenant_id}, {"$setOnInsert": {"created_ts": now}}, upsert=True
        )
