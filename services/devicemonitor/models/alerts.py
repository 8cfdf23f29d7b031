"""Alerts and the monitor configuration a device reports."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr, field_validator

__all__ = [
    "Alert",
    "AlertDetails",
    "AlertQuery",
    "AlertSubject",
    "Level",
    "LineDescriptor",
    "MonitorCheck",
    "MonitorConfiguration",
    "NewAlert",
]


class Level(enum.StrEnum):
    """An alert's severity: something is wrong (`CRITICAL`), or it is right again (`OK`)."""

    OK = "OK"
    CRITICAL = "CRITICAL"


_NAME_LENGTH = 1024


class _Model(BaseModel):
    # What a device adds beyond the known fields is not kept.
    model_config = ConfigDict(frozen=True, extra="ignore")


class LineDescriptor(_Model):
    """One line of a log file, with its number."""

    line_number: int
    data: str


class AlertDetails(_Model):
    """What the device tells about an alert: a description, or the log lines around a match."""

    description: str | None = None
    lines_before: tuple[LineDescriptor, ...] | None = None
    lines_after: tuple[LineDescriptor, ...] | None = None
    line_matching: LineDescriptor | None = None


class AlertSubject(_Model):
    """What the alert is about: the monitored entity, its kind and its state."""

    name: StrictStr = Field(min_length=1, max_length=_NAME_LENGTH)
    type: StrictStr = Field(max_length=_NAME_LENGTH)
    status: StrictStr = Field(max_length=_NAME_LENGTH)
    details: AlertDetails | None = None


class Alert(_Model):
    """One alert a device raised (or a telemetry threshold raised for it)."""

    id: str
    device_id: str
    name: str
    level: Level
    subject: AlertSubject
    timestamp: datetime


class AlertQuery(_Model):
    """Which of a device's alerts to list, and in which order."""

    issued_after: datetime | None = None
    issued_before: datetime | None = None
    sort_ascending: bool = False


# A check the device runs (`{"name", "status", "type", "log"|"service"|"dbus": {…}}`),
# kept as the device sent it.
MonitorConfiguration = dict[str, Any]


class NewAlert(_Model):
    """An alert as a device reports it (the name defaults to its subject's)."""

    name: StrictStr | None = Field(default=None, min_length=1, max_length=_NAME_LENGTH)
    device_id: StrictStr | None = None
    level: Level
    subject: AlertSubject
    timestamp: AwareDatetime

    @field_validator("level", mode="before")
    @classmethod
    def _known_level(cls, value: Any) -> Any:
        if value not in tuple(Level):
            raise ValueError(f"unknown level {value!r}: must be OK or CRITICAL")
        return value


class MonitorCheck(_Model):
    """The part of a reported check that is checked: its name, status and subsystem."""

    name: StrictStr = Field(min_length=1, max_length=_NAME_LENGTH)
    status: StrictStr = Field(max_length=_NAME_LENGTH)
    type: StrictStr

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in ("log", "service", "dbus"):
            raise ValueError(f"unknown type {value!r}: must be log, service or dbus")
        return value
