"""Indexes of the deviceconnect database, created at start-up (idempotent)."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, IndexModel

from common.core.outbox import OUTBOX_INDEXES

__all__ = ["DEVICES", "INDEXES", "RECORDINGS", "SESSIONS"]

DEVICES: Final = "devices"
SESSIONS: Final = "sessions"
RECORDINGS: Final = "recordings"

_T: Final = ("tenant_id", ASCENDING)

INDEXES: Final[dict[str, list[IndexModel]]] = {
    # Lookups by id; the tenant's connected devices (cut off when the tenant goes).
    DEVICES: [
        IndexModel([_T, ("_id", ASCENDING)], name="tenant_id"),
        IndexModel([_T, ("status", ASCENDING)], name="tenant_id_status"),
    ],
    # Sessions by id, by device; expired with their recordings.
    SESSIONS: [
        IndexModel([_T, ("_id", ASCENDING)], name="tenant_id"),
        IndexModel([_T, ("device_id", ASCENDING)], name="tenant_id_device_id"),
        IndexModel([("expire_ts", ASCENDING)], name="expire_ts", expireAfterSeconds=0),
    ],
    # A session's recording in order; recordings vanish when they expire.
    RECORDINGS: [
        IndexModel([_T, ("session_id", ASCENDING), ("seq", ASCENDING)], name="session_seq"),
        IndexModel([("expire_ts", ASCENDING)], name="expire_ts", expireAfterSeconds=0),
    ],
    **OUTBOX_INDEXES,
}
