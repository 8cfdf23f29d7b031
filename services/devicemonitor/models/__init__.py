"""Domain models of devicemonitor: alerts and monitor checks, telemetry samples."""

from services.devicemonitor.models.alerts import (
    Alert,
    AlertDetails,
    AlertQuery,
    AlertSubject,
    Level,
    LineDescriptor,
    MonitorCheck,
    MonitorConfiguration,
    NewAlert,
)
from services.devicemonitor.models.telemetry import (
    FAMILIES,
    MinuteStats,
    NewSample,
    Point,
    Series,
    Threshold,
    Thresholds,
    check_metric,
    readings,
)

__all__ = [
    "FAMILIES",
    "Alert",
    "AlertDetails",
    "AlertQuery",
    "AlertSubject",
    "Level",
    "LineDescriptor",
    "MinuteStats",
    "MonitorCheck",
    "MonitorConfiguration",
    "NewAlert",
    "NewSample",
    "Point",
    "Series",
    "Threshold",
    "Thresholds",
    "check_metric",
    "readings",
]
