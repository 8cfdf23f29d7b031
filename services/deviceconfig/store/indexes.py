"""deviceconfig's indexes: every query names the tenant and the device id."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, IndexModel

from common.core.outbox import OUTBOX_INDEXES

__all__ = ["DEVICES", "INDEXES"]

DEVICES: Final = "devices"

# Reads and writes of one device match `_id` (the device id) within its tenant, merges also
# the revision they read; a tenant's deletion matches the tenant alone. One index serves
# them all through its prefixes. (The embedded server's planner only picks an index that
# covers every condition of a query, so the revision is part of it.)
INDEXES: Final = {
    DEVICES: [
        IndexModel(
            [("tenant_id", ASCENDING), ("_id", ASCENDING), ("revision", ASCENDING)],
            name="tenant_id__id_revision",
        )
    ],
    **OUTBOX_INDEXES,
}
