"""Telemetry: the samples an agent reports, the per-minute statistics kept of them, and the
thresholds that turn a reading out of range into an alert.

A sample's numeric readings become metrics named `<family>/<name>`: `temperature/CPU`,
`voltage/12V`, `current/OEM0`, `fanspeed/FAN1` (hardware monitor sensors, in the unit the
agent gives), `cpu/total` and `cpu/<core>` (percent), `memory/used` and `memory/total`
(bytes). Host information and service states are kept with the device's latest sample only.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final, NamedTuple

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)
from typing_extensions import TypedDict

__all__ = [
    "FAMILIES",
    "MinuteStats",
    "NewSample",
    "Point",
    "Series",
    "Threshold",
    "Thresholds",
    "check_metric",
    "readings",
]

HWMON_KINDS: Final = ("temperature", "voltage", "current", "fanspeed")
FAMILIES: Final = (*HWMON_KINDS, "cpu", "memory")
_NAME: Final = re.compile(r"[A-Za-z0-9 _+:()#-]{1,64}")
_METRIC: Final = re.compile(rf"({'|'.join(FAMILIES)})/([A-Za-z0-9 _+:()#-]{{1,64}}|\*)")
_MAX_READINGS: Final = 64
_MAX_CORES: Final = 256


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


def _sensor_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be 1-64 letters, digits, spaces or any of _ + : ( ) # -")
    return value


def check_metric(name: str) -> str:
    """A metric name (`family/name`, or `family/*` for all of a family), or ValueError."""
    if not _METRIC.fullmatch(name):
        raise ValueError(
            f"unknown metric {name!r}: must be <family>/<name> or <family>/*, the family one "
            f"of {', '.join(FAMILIES)}"
        )
    return name


Number = Annotated[float, BeforeValidator(_number)]
_Name = Annotated[StrictStr, AfterValidator(_sensor_name)]
_Text = Annotated[StrictStr, Field(max_length=256)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reading(_Model):
    """One hardware monitor sensor: its name, value and unit."""

    name: _Name
    value: Number
    unit: Annotated[StrictStr, Field(max_length=32)] = ""


_Readings = Annotated[tuple[Reading, ...], Field(max_length=_MAX_READINGS)]


class HwMon(_Model):
    """Hardware monitor readings by kind."""

    temperature: _Readings = ()
    voltage: _Readings = ()
    current: _Readings = ()
    fanspeed: _Readings = ()


class Cpu(_Model):
    """CPU use in percent: in all, and per core."""

    total: Number | None = None
    cores: Annotated[tuple[Number, ...], Field(max_length=_MAX_CORES)] = ()


class Memory(_Model):
    """Memory in bytes."""

    used: Number | None = None
    total: Number | None = None


class Host(_Model):
    """What the device runs: operating system, kernel, uptime (seconds), host name."""

    os: _Text | None = None
    kernel: _Text | None = None
    uptime: Number | None = None
    hostname: _Text | None = None


class ServiceState(_Model):
    """A service on the device: whether it runs, and whether it starts at boot."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    active: StrictBool
    enabled: StrictBool


class NewSample(_Model):
    """One sample as an agent reports it; every part is optional."""

    # When the sample was taken; without it, when the server received it.
    timestamp: AwareDatetime | None = None
    device_id: StrictStr | None = None
    hwmon: HwMon | None = None
    cpu: Cpu | None = None
    memory: Memory | None = None
    host: Host | None = None
    services: Annotated[tuple[ServiceState, ...], Field(max_length=256)] = ()


def readings(sample: NewSample) -> dict[str, tuple[float, str]]:
    """The sample's numeric readings: metric name → (value, unit)."""
    found: dict[str, tuple[float, str]] = {}
    if sample.hwmon is not None:
        for kind in HWMON_KINDS:
            for reading in getattr(sample.hwmon, kind):
                found[f"{kind}/{reading.name}"] = (reading.value, reading.unit)
    if sample.cpu is not None:
        if sample.cpu.total is not None:
            found["cpu/total"] = (sample.cpu.total, "%")
        for core, value in enumerate(sample.cpu.cores):
            found[f"cpu/{core}"] = (value, "%")
    if sample.memory is not None:
        for part in ("used", "total"):
            value = getattr(sample.memory, part)
            if value is not None:
                found[f"memory/{part}"] = (value, "bytes")
    return found


class MinuteStats(NamedTuple):
    """How a metric read over some time: count, sum, lowest and highest reading."""

    n: int
    total: float
    low: float
    high: float

    @classmethod
    def of(cls, value: float) -> MinuteStats:
        """The statistics of one reading."""
        return cls(1, value, value, value)

    def merge(self, other: MinuteStats) -> MinuteStats:
        """The statistics of both spans together."""
        return MinuteStats(
            self.n + other.n,
            self.total + other.total,
            min(self.low, other.low),
            max(self.high, other.high),
        )


class Point(TypedDict):
    """One downsampled bucket of a series: where it starts (RFC 3339), its min/avg/max and
    how many readings it has."""

    t: str
    min: float
    avg: float
    max: float
    n: int


class Series(TypedDict):
    """A metric's buckets over a time range."""

    metric: str
    unit: str
    points: list[Point]


class Threshold(_Model):
    """The range a metric should stay within; either bound may be left open."""

    min: Number | None = None
    max: Number | None = None

    @model_validator(mode="after")
    def _a_range(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min {self.min} must be below max {self.max}")
        return self

    def breach(self, value: float) -> str | None:
        """How a reading is out of range (`above the maximum 85`), or None within it."""
        if self.max is not None and value > self.max:
            return f"above the maximum {self.max:g}"
        if self.min is not None and value < self.min:
            return f"below the minimum {self.min:g}"
        return None


# A tenant's thresholds by metric name (`family/name` or `family/*`).
Thresholds = dict[str, Threshold]
