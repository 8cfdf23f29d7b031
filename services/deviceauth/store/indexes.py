"""Indexes of the deviceauth database, created at start-up."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, IndexModel

from common.core.outbox import OUTBOX_INDEXES
from common.core.revocations import REVOCATION_INDEXES

__all__ = ["AUTH_SETS", "DEVICES", "INDEXES", "LIMITS", "TOKENS"]

DEVICES: Final = "devices"
AUTH_SETS: Final = "auth_sets"
TOKENS: Final = "tokens"
LIMITS: Final = "limits"

INDEXES: Final = {
    DEVICES: [
        IndexModel(
            [("tenant_id", ASCENDING), ("id_data_sha256", ASCENDING)],
            unique=True,
            name="tenant_identity",
        ),
        # Several devices by id at once (check-ins the gateway reports, lists by id).
        IndexModel([("tenant_id", ASCENDING), ("_id", ASCENDING)], name="tenant_id"),
        # Device lists are ordered by status, then id.
        IndexModel(
            [("tenant_id", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)],
            name="tenant_status_id",
        ),
    ],
    AUTH_SETS: [
        IndexModel(
            [("tenant_id", ASCENDING), ("id_data_sha256", ASCENDING), ("pubkey", ASCENDING)],
            unique=True,
            name="tenant_identity_key",
        ),
        IndexModel([("tenant_id", ASCENDING), ("device_id", ASCENDING)], name="tenant_device"),
    ],
    TOKENS: [
        IndexModel([("tenant_id", ASCENDING), ("sub", ASCENDING)], name="tenant_device"),
        # Expired tokens disappear on their own.
        IndexModel([("exp.time", ASCENDING)], expireAfterSeconds=0, name="expiry"),
    ],
    LIMITS: [
        IndexModel([("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True, name="tenant_name")
    ],
    **OUTBOX_INDEXES,
    **REVOCATION_INDEXES,
}
