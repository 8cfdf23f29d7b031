"""MongoDB implementation of the inventory store: one document per device.

A device document holds `attributes` keyed `"<scope>-<name>"` (with `.` and `$` in names
replaced by U+FF0E and U+FF04, as Mender stores them), `revision` (the status revision from
deviceauth), `tags_etag`, `created_ts`/`updated_ts`, and `text`: the lower-cased keywords
of the id, the group and the string values of identity, inventory and tags attributes.

Every write is one update pipeline that also recomputes `text` inside the database, so the
keywords are always those of the stored attributes. Each write also counts up `version`.

A write's filter names `_id` and plain equalities only, so the database looks the device
up by its key at any fleet size: an `$expr` or `$or` in a filter makes it scan the whole
collection. A write with a condition that cannot be such an equality (per-scope limits,
If-Unmodified-Since, an unchanged report) reads the device first, checks the conditions on
it, and writes only if its `version` is still the one read. The tags ETag and the status
revision order stay in the filter, beside `_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from common.core.errors import Conflict
from common.core.mongo import Document, TenantCollection
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
from services.inventory.store.indexes import DEVICES, TENANTS

__all__ = ["MongoStore", "attribute_key", "search_filter", "value_path"]

_TEXT_SCOPES: Final = ["identity", "inventory", "tags"]
_GROUP_KEY: Final = "system-group"
_GROUP_PATH: Final = f"attributes.{_GROUP_KEY}.value"
_STATUS_PATH: Final = "attributes.identity-status.value"
_UPDATED_KEY: Final = "system-updated_ts"
_UPDATED_PATH: Final = f"attributes.{_UPDATED_KEY}.value"
_CREATED_KEY: Final = "system-created_ts"
_TIERS: Final = ("standard", "micro", "system")
_WRITE_ATTEMPTS: Final = 3
_DUPLICATE_KEY: Final = 11000
_KEY_ESCAPES: Final = str.maketrans({".": "\uff0e", "$": "\uff04"})
# The digest of the device's last whole report, while its inventory scope is exactly that.
_DIGEST: Final = "report_digest"
# Counts the writes to a device: a write after a read applies only if it is unchanged.
_VERSION: Final = "version"
_NEXT_VERSION: Final = {"$add": [{"$ifNull": [f"${_VERSION}", 0]}, 1]}
# What a conditional write reads of the device to check its conditions.
_CHECKED: Final = {"attributes": 1, "tags_etag": 1, _VERSION: 1, _DIGEST: 1, "updated_ts": 1}


def attribute_key(scope: str, name: str) -> str:
    """The key of an attribute inside `attributes` (Mender's escaping of `.` and `$`)."""
    return f"{scope}-{name.translate(_KEY_ESCAPES)}"


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

# The keywords of the document as it stands at this point of the pipeline.
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
                                        {"$in": ["$$a.v.scope", _TEXT_SCOPES]},
                                        {"$eq": ["$$a.k", _GROUP_KEY]},
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
_BUMP_STAGE: Final = {"$set": {_VERSION: _NEXT_VERSION}}


def _attribute_doc(attr: Attribute) -> Document:
    doc: Document = {"name": attr.name, "value": attr.value, "scope": attr.scope}
    if attr.description is not None:
        doc["description"] = attr.description
    if attr.timestamp is not None:
        doc["timestamp"] = attr.timestamp
    return doc


def _system(name: str, value: Any) -> Document:
    return {"name": name, "value": value, "scope": "system"}


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
        if key == _UPDATED_KEY:
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


def _limited(change: DeviceChange) -> bool:
    """Whether the write adds to a scope whose size is limited (counted on the stored device)."""
    return any(
        scope in change.limits and scope not in change.replace_scopes
        for scope in _new_keys_by_scope(change)
    )


def _over_limit_up_front(change: DeviceChange) -> bool:
    return any(
        scope in change.limits and len(keys) > change.limits[scope]
        for scope, keys in _new_keys_by_scope(change).items()
    )


def _write_filter(device_id: str, change: DeviceChange, revision: int | None = None) -> Document:
    """The filter of a write that needs no read first (see `_read_first`)."""
    filter_: Document = {"_id": device_id}
    if change.if_tags_etag is not None:
        filter_["tags_etag"] = change.if_tags_etag
    if revision is not None:
        filter_["revision"] = {"$lt": revision}
    return filter_


def _read_first(change: DeviceChange) -> bool:
    """Whether a write's conditions are checked on the device read before it."""
    return (
        _limited(change)
        or change.if_unmodified_since is not None
        or (change.report_digest is not None and change.skip_if_updated_after is not None)
    )


def _unchanged(doc: Document, change: DeviceChange) -> bool:
    """Whether a report is the one stored, and the device was updated recently enough."""
    if change.report_digest is None or change.skip_if_updated_after is None:
        return False
    updated = doc.get("updated_ts")
    return (
        doc.get(_DIGEST) == change.report_digest
        and isinstance(updated, datetime)
        and updated > change.skip_if_updated_after
    )


def _write_pipeline(change: DeviceChange, revision: int | None = None) -> list[Document]:
    now = change.now
    sets = {attribute_key(a.scope, a.name): _attribute_doc(a) for a in change.set}
    if change.touch_updated:
        sets[_UPDATED_KEY] = _system("updated_ts", now)
    base: Any = {"$ifNull": ["$attributes", {}]}
    removed = [attribute_key(r.scope, r.name) for r in change.remove]
    if change.replace_scopes or removed:
        keep = [{"$not": [{"$in": ["$$a.v.scope", sorted(change.replace_scopes)]}]}]
        if removed:
            keep.append({"$not": [{"$in": ["$$a.k", removed]}]})
        base = {
            "$arrayToObject": {
                "$filter": {"input": _ALL_ATTRIBUTES, "as": "a", "cond": {"$and": keep}}
            }
        }
    first: Document = {
        "attributes": {"$mergeObjects": [base, {"$literal": sets}]},
        "created_ts": {"$ifNull": ["$created_ts", {"$literal": now}]},
        "revision": {"$literal": revision}
        if revision is not None
        else {"$ifNull": ["$revision", 0]},
        _VERSION: _NEXT_VERSION,
    }
    if change.touch_updated:
        first["updated_ts"] = {"$literal": now}
    if change.new_tags_etag is not None:
        first["tags_etag"] = {"$literal": change.new_tags_etag}
    if change.touches_inventory:
        digest = change.report_digest
        first[_DIGEST] = "$$REMOVE" if digest is None else {"$literal": digest}
    second: Document = {
        f"attributes.{_CREATED_KEY}": {
            "$ifNull": [f"$attributes.{_CREATED_KEY}", {"$literal": _system("created_ts", now)}]
        },
        "text": _TEXT_EXPR,
    }
    return [{"$set": first}, {"$set": second}]


def _why_not_applied(doc: Document | None, change: DeviceChange) -> WriteOutcome | None:
    """Tell which condition kept a write from applying; None if none did (a race)."""
    if doc is None:
        return None if change.create else WriteOutcome.NOT_FOUND
    if change.if_tags_etag is not None and doc.get("tags_etag") != change.if_tags_etag:
        return WriteOutcome.ETAG_MISMATCH
    if change.if_unmodified_since is not None:
        updated = ((doc.get("attributes") or {}).get(_UPDATED_KEY) or {}).get("value")
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
        pipeline = _write_pipeline(change)
        read_first = _read_first(change)
        for _ in range(_WRITE_ATTEMPTS):
            filter_ = _write_filter(device_id, change)
            if read_first:
                doc = await coll.find_one({"_id": device_id}, _CHECKED)
                if doc is not None and _unchanged(doc, change):
                    return WriteOutcome.OK
                outcome = _why_not_applied(doc, change)
                if outcome is not None:
                    return outcome
                # Applies only to the device as read (or, if there was none, to no device).
                filter_[_VERSION] = {"$exists": False} if doc is None else doc.get(_VERSION)
            try:
                result = await coll.update_one(filter_, pipeline, upsert=change.create)
            except DuplicateKeyError:
                # An upsert whose conditions failed on an existing device, or a concurrent
                # creation of the same device: find out which.
                pass
            else:
                if result.matched_count or result.upserted_id is not None:
                    return WriteOutcome.OK
            if not read_first:
                outcome = _why_not_applied(
                    await coll.find_one({"_id": device_id}, _CHECKED), change
                )
                if outcome is not None:
                    return outcome
        raise Conflict("the device id is taken or the device is being changed concurrently")

    async def set_statuses(
        self,
        tenant_id: str,
        *,
        status: str,
        devices: Sequence[tuple[str, int]],
        now: datetime,
    ) -> UpdateResult:
        """Set identity `status` on each (id, revision) whose stored revision is older."""
        coll = self._coll(tenant_id)
        change = DeviceChange(
            now=now, set=(Attribute(name="status", scope="identity", value=status),)
        )
        writes = [
            (_write_filter(device_id, change, revision), _write_pipeline(change, revision))
            for device_id, revision in devices
        ]
        if not writes:
            return UpdateResult(matched_count=0, created_count=0, updated_count=0)
        # One bulk write for the whole list (the outbox merges many devices into one call).
        try:
            result = await coll.update_each(writes, upsert=True)
            matched, created = result.matched_count, result.upserted_count
            again: list[tuple[Document, list[Document]]] = []
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            matched, created = exc.details["nMatched"], len(exc.details.get("upserted", []))
            again = [writes[e["index"]] for e in errors]
        # A duplicate key means the device exists with this revision or a newer one (an
        # older, out-of-order update), unless another request created it just now: once more.
        for filter_, pipeline in again:
            try:
                retried = await coll.update_one(filter_, pipeline, upsert=True)
            except DuplicateKeyError:
                continue
            matched += retried.matched_count
            created += retried.upserted_id is not None
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
            projection = {f"attributes.{_UPDATED_KEY}": 1}
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
                        _VERSION: {
                            "$cond": [
                                {"$eq": [f"${_GROUP_PATH}", group]},
                                "$version",
                                _NEXT_VERSION,
                            ]
                        }
                    }
                },
                {"$set": {f"attributes.{_GROUP_KEY}": {"$literal": _system("group", group)}}},
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
            filter_, [{"$unset": f"attributes.{_GROUP_KEY}"}, _TEXT_STAGE, _BUMP_STAGE]
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
