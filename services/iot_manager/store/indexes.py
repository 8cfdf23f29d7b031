"""The indexes of iot-manager's collections, one for each query the store makes."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, DESCENDING, IndexModel

from common.core.outbox import OUTBOX_INDEXES

__all__ = ["DEVICES", "EVENTS", "INDEXES", "INTEGRATIONS"]

INTEGRATIONS: Final = "integrations"
DEVICES: Final = "devices"
EVENTS: Final = "events"

INDEXES: Final = {
    # One integration per tenant (as Mender allows); it also serves the tenant's list.
    INTEGRATIONS: [
        IndexModel([("tenant_id", ASCENDING)], unique=True, name="integration_one_per_tenant")
    ],
    # Whether an integration is in use; lookups by id use `_id`.
    DEVICES: [
        IndexModel(
            [("tenant_id", ASCENDING), ("integration_ids", ASCENDING)],
            name="tenant_id_integration_ids",
        )
    ],
    EVENTS: [
        # The tenant's events, newest first, and those of one integration.
        IndexModel([("tenant_id", ASCENDING), ("event_ts", DESCENDING)], name="tenant_id_event_ts"),
        IndexModel(
            [("tenant_id", ASCENDING), ("integration_ids", ASCENDING), ("event_ts", DESCENDING)],
            name="tenant_id_integration_ids_event_ts",
        ),
        # Events expire at `expire_ts`.
        IndexModel([("expire_ts", ASCENDING)], expireAfterSeconds=0, name="events_ttl"),
    ],
    **OUTBOX_INDEXES,
}
