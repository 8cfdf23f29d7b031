"""The inventory's indexes: one per query path the UI, deployments and devices use."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, IndexModel

__all__ = ["DEVICES", "HINTABLE_PATHS", "INDEXES", "TENANTS", "index_for"]

DEVICES: Final = "devices"
TENANTS: Final = "tenants"

# Fields with an equality index (after `tenant_id`), most selective first: a search picks
# the first one it filters on by equality as its index hint. The embedded server's planner
# only uses an index whose fields match the filter exactly, so queries with more conditions
# name their index; on MongoDB the hint picks the index its planner would favour anyway.
HINTABLE_PATHS: Final[tuple[str, ...]] = (
    "_id",
    "attributes.identity-mac.value",
    "text",
    "attributes.inventory-device_type.value",
    "attributes.system-group.value",
    "attributes.identity-status.value",
    "attributes.system-updated_ts.value",
)


def index_for(path: str) -> str:
    """The name of the index serving equality on `path` within a tenant."""
    return f"tenant_id_1_{path}_1"


INDEXES: Final = {
    DEVICES: [
        IndexModel([("tenant_id", ASCENDING), (path, ASCENDING)], name=index_for(path))
        for path in HINTABLE_PATHS
    ],
}
