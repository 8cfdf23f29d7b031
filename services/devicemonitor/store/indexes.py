"""devicemonitor's collections and their indexes: every query names the tenant and device."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, IndexModel

from common.core.outbox import OUTBOX_INDEXES

__all__ = [
    "ALERTS",
    "CONFIGURATIONS",
    "INDEXES",
    "LATEST",
    "SAMPLES",
    "TELEMETRY",
    "THRESHOLDS",
]

# Every alert, as raised.
ALERTS: Final = "alerts"
# Per device and alert name, the latest alert: the device's open issues are those at CRITICAL.
LATEST: Final = "latest_alerts"
# Per device, the monitor configuration it reported (`_id` is the device id).
CONFIGURATIONS: Final = "configurations"

# Telemetry: per device and hour, each metric's statistics per minute; expired by `expire_at`.
SAMPLES: Final = "samples"
# Per device: its latest sample and the few before it (for streams) with their sequence, and
# the metrics now out of their range (a CRITICAL alert was raised for each).
TELEMETRY: Final = "telemetry"
# Per tenant, the thresholds of metrics.
THRESHOLDS: Final = "thresholds"

# Keys are ascending and scanned backwards for the newest first: the embedded server answers
# a range over a descending key wrongly.
INDEXES: Final = {
    # A device's alerts in time order (both directions), within a time range.
    ALERTS: [
        IndexModel(
            [
                ("tenant_id", ASCENDING),
                ("device_id", ASCENDING),
                ("timestamp", ASCENDING),
                ("_id", ASCENDING),
            ],
            name="tenant_device_timestamp",
        )
    ],
    # One entry per device and name; the open ones listed latest first.
    LATEST: [
        IndexModel(
            [("tenant_id", ASCENDING), ("device_id", ASCENDING), ("name", ASCENDING)],
            name="tenant_device_name",
            unique=True,
        ),
        IndexModel(
            [
                ("tenant_id", ASCENDING),
                ("device_id", ASCENDING),
                ("level", ASCENDING),
                ("timestamp", ASCENDING),
            ],
            name="tenant_device_level_timestamp",
        ),
    ],
    CONFIGURATIONS: [
        IndexModel([("tenant_id", ASCENDING), ("_id", ASCENDING)], name="tenant_device"),
    ],
    SAMPLES: [
        IndexModel(
            [("tenant_id", ASCENDING), ("device_id", ASCENDING), ("hour", ASCENDING)],
            name="tenant_device_hour",
            unique=True,
        ),
        IndexModel([("expire_at", ASCENDING)], name="expire_at", expireAfterSeconds=0),
    ],
    TELEMETRY: [
        IndexModel(
            [("tenant_id", ASCENDING), ("device_id", ASCENDING)],
            name="tenant_device",
            unique=True,
        ),
    ],
    THRESHOLDS: [IndexModel([("tenant_id", ASCENDING)], name="tenant", unique=True)],
    **OUTBOX_INDEXES,
}
