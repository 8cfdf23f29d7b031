"""The inventory's indexes: one per query path the UI, deployments and devices use."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, IndexModel

__all__ = ["DEVICES", "INDEXED_PATHS", "INDEXES", "TENANTS", "index_name"]

DEVICES: Final = "devices"
TENANTS: Final = "tenants"

# Every device index is `(tenant_id, <path>)`: the id (reads and writes by id, the default
# list order), the attributes the web UI and deployments filter and sort on, the update
# time and the free-text keywords (multikey). Only `store/mongo.py` builds queries on them.
INDEXED_PATHS: Final[tuple[str, ...]] = (
    "_id",
    "attributes.identity-mac.value",
    "text",
    "attributes.inventory-device_type.value",
    "attributes.system-group.value",
    "attributes.identity-status.value",
    "attributes.system-updated_ts.value",
)


def index_name(path: str) -> str:
    """The name of the index on `path` within a tenant."""
    return f"tenant_id_1_{path}_1"


INDEXES: Final = {
    DEVICES: [
        IndexModel([("tenant_id", ASCENDING), (path, ASCENDING)], name=index_name(path))
        for path in INDEXED_PATHS
    ],
}
