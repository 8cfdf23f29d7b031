"""auditlogs' indexes: one per filter of the listing, each ending in the time it sorts on."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, IndexModel

__all__ = ["INDEXES", "LOGS"]

LOGS: Final = "logs"


def _by(*fields: str) -> IndexModel:
    keys = [
        ("tenant_id", ASCENDING),
        *((f, ASCENDING) for f in fields),
        ("time", ASCENDING),
        ("_id", ASCENDING),
    ]
    return IndexModel(keys, name="_".join(("tenant_id", *fields, "time", "id")))


# Every query names the tenant, sorts on `time` (then `_id`, which breaks ties between events
# of one millisecond) and may bound the time; each filter has an index that covers it with
# the tenant and the order (the embedded server's planner only picks an index covering every
# condition). The web UI pairs `object_type` with `object_id` or `object_deployment_name`,
# so those pairs have theirs. `expire_ts` is the retention's TTL.
INDEXES: Final = {
    LOGS: [
        _by(),
        _by("actor.id"),
        _by("actor.email"),
        _by("object.id"),
        _by("object.type", "object.id"),
        _by("object.type", "object.deployment.name"),
        IndexModel([("expire_ts", ASCENDING)], name="expire_ts", expireAfterSeconds=0),
    ],
}
