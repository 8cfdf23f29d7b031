"""devicemonitor's storage interface; `MongoStore` implements it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from common.core.outbox import Effect
from services.devicemonitor.models import (
    Alert,
    AlertQuery,
    MinuteStats,
    MonitorConfiguration,
    Thresholds,
)

__all__ = [
    "DataStore",
    "DeviceTelemetry",
    "Minutes",
    "SamplePlan",
    "StreamedSample",
    "TelemetryStore",
]


class DataStore(Protocol):
    """Where alerts and monitor configurations live; every method is confined to one tenant."""

    async def add_alerts(
        self, tenant_id: str, alerts: Sequence[Alert], *, effects: Sequence[Effect]
    ) -> None:
        """Record alerts, their devices' latest alert per name, and the effects, at once."""
        ...

    async def list_alerts(
        self, tenant_id: str, device_id: str, query: AlertQuery, *, skip: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of a device's alerts and how many match in all."""
        ...

    async def open_alerts(
        self, tenant_id: str, device_id: str, *, skip: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of the device's latest alert per name still at CRITICAL, and their number."""
        ...

    async def set_configuration(
        self,
        tenant_id: str,
        device_id: str,
        configuration: Sequence[MonitorConfiguration],
        *,
        now: datetime,
    ) -> None:
        """Replace the monitor configuration a device reported."""
        ...

    async def get_configuration(self, tenant_id: str, device_id: str) -> list[MonitorConfiguration]:
        """The monitor configuration a device reported (empty if none)."""
        ...

    async def delete_device(self, tenant_id: str, device_id: str) -> None:
        """Forget everything stored about a device: alerts, configuration, telemetry."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceTelemetry:
    """What a sample report starts from: the device's latest sample time, its breaches."""

    latest: datetime | None
    breaches: frozenset[str]


@dataclass(frozen=True, slots=True)
class SamplePlan:
    """What a sample report writes, decided from the device's `DeviceTelemetry`."""

    # The samples kept (newer than the device's latest), oldest first: time and content.
    samples: tuple[tuple[datetime, dict[str, Any]], ...] = ()
    # hour → metric → minute of the hour → statistics to add.
    stats: dict[datetime, dict[str, dict[int, MinuteStats]]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    # Metrics that left their range, and that came back into it.
    opened: frozenset[str] = frozenset()
    closed: frozenset[str] = frozenset()
    alerts: tuple[Alert, ...] = ()
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamedSample:
    """A device's sample with its sequence number (1, 2, … per device)."""

    seq: int
    sample: dict[str, Any]


# Per metric: its unit and its statistics by the span they are of (a minute, or five; its
# start in seconds since the epoch), oldest first.
Minutes = dict[str, tuple[str, list[tuple[int, MinuteStats]]]]


class TelemetryStore(Protocol):
    """Where samples, their statistics, thresholds and breaches live (one tenant a call)."""

    async def record_samples(
        self, tenant_id: str, device_id: str, plan: Callable[[DeviceTelemetry], SamplePlan]
    ) -> SamplePlan:
        """Write what `plan` decides from the device's current state, all at once."""
        ...

    async def latest_sample(self, tenant_id: str, device_id: str) -> StreamedSample | None:
        """The device's latest sample, or None."""
        ...

    async def samples_after(self, tenant_id: str, device_id: str, seq: int) -> list[StreamedSample]:
        """The device's recent samples after sequence `seq`, oldest first."""
        ...

    async def minutes(
        self,
        tenant_id: str,
        device_id: str,
        *,
        metrics: Sequence[str] | None,
        start: datetime,
        end: datetime,
        step: int,
    ) -> Minutes:
        """Statistics per `step` (60 or 300 s) of the metrics (all if None) in [start, end)'s
        hours."""
        ...

    async def get_thresholds(self, tenant_id: str) -> Thresholds:
        """The tenant's thresholds."""
        ...

    async def set_thresholds(self, tenant_id: str, thresholds: Thresholds) -> None:
        """Replace the tenant's thresholds."""
        ...
