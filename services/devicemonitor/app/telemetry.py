"""Telemetry: agents report samples; operators read the latest, a downsampled range, or a
stream; thresholds turn a reading out of range into an alert, and its return into an OK."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from services.devicemonitor.app.alerts import alert_effects
from services.devicemonitor.app.downsample import (
    HourStats,
    choose_bucket,
    downsample,
    gather,
    span_for,
)
from services.devicemonitor.app.errors import InvalidRequest, NoTelemetry
from services.devicemonitor.app.validation import batch, check_device, check_not_future, parse
from services.devicemonitor.models import (
    Alert,
    AlertDetails,
    AlertSubject,
    Level,
    NewSample,
    Series,
    Threshold,
    Thresholds,
    check_metric,
    readings,
)
from services.devicemonitor.store import (
    DeviceTelemetry,
    SamplePlan,
    StreamedSample,
    TelemetryStore,
)

__all__ = ["Range", "TelemetryApp"]

_MAX_THRESHOLDS: Final = 1000
_MAX_SERIES: Final = 100
_THRESHOLD: Final = "threshold"


@dataclass(frozen=True, slots=True)
class Range:
    """A downsampled time range: its bounds, bucket size (seconds) and one series a metric."""

    start: datetime
    end: datetime
    bucket: int
    series: list[Series]


def _rule(thresholds: Thresholds, metric: str) -> Threshold | None:
    """The threshold of a metric: its own, else its family's (`temperature/*`)."""
    return thresholds.get(metric) or thresholds.get(metric.split("/", 1)[0] + "/*")


def _threshold_alert(
    device_id: str, metric: str, when: datetime, value: float, unit: str, breach: str | None
) -> Alert:
    reading = f"{value:g} {unit}".rstrip()
    description = (
        f"{metric} read {reading}, {breach}" if breach else f"{metric} read {reading}, in range"
    )
    return Alert(
        id=str(uuid.uuid4()),
        device_id=device_id,
        name=metric,
        level=Level.CRITICAL if breach else Level.OK,
        subject=AlertSubject(
            name=metric,
            type=_THRESHOLD,
            status="out of range" if breach else "in range",
            details=AlertDetails(description=description),
        ),
        timestamp=when,
    )


class TelemetryApp:
    """The telemetry use-cases over their store."""

    def __init__(
        self,
        store: TelemetryStore,
        *,
        clock: Callable[[], datetime],
        max_batch: int,
        max_skew: timedelta,
        poll_interval: float,
        thresholds_ttl: float,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._thresholds_ttl = thresholds_ttl
        # tenant → (when it was read, on the monotonic clock; its thresholds)
        self._cached: dict[str, tuple[float, Thresholds]] = {}
        self._clock = clock
        self._max_batch = max_batch
        self._max_skew = max_skew
        self._poll_interval = poll_interval
        self._notify = notify

    def _samples(self, device_id: str, body: Any) -> list[tuple[datetime, NewSample]]:
        items = batch(body, "samples", limit=self._max_batch)
        now = self._clock()
        checked = []
        for i, raw in enumerate(items):
            sample = parse(NewSample, raw, f"sample {i}")
            check_device(sample.device_id, device_id)
            when = (sample.timestamp or now).astimezone(UTC)
            check_not_future(when, f"sample {i}: timestamp", now=self._clock, skew=self._max_skew)
            checked.append((when, sample))
        checked.sort(key=lambda item: item[0])
        return checked

    async def report(self, tenant_id: str, device_id: str, body: Any) -> int:
        """Record the samples a device reports (one, or an array); return how many were new.

        Samples no newer than the device's latest are left out: a report is retried when
        its answer was lost, and must not count twice.
        """
        samples = self._samples(device_id, body)
        thresholds = await self._current_thresholds(tenant_id)

        def plan(state: DeviceTelemetry) -> SamplePlan:
            fresh = [s for s in samples if state.latest is None or s[0] > state.latest]
            return self._plan(tenant_id, device_id, fresh, state.breaches, thresholds)

        done = await self._store.record_samples(tenant_id, device_id, plan)
        if done.alerts:
            self._notify()
        return len(done.samples)

    def _plan(
        self,
        tenant_id: str,
        device_id: str,
        samples: Sequence[tuple[datetime, NewSample]],
        breaches: frozenset[str],
        thresholds: Thresholds,
    ) -> SamplePlan:
        stats: HourStats = {}
        units: dict[str, str] = {}
        open_ = set(breaches)
        alerts: list[Alert] = []
        for when, sample in samples:
            values = readings(sample)
            gather(stats, when, values)
            for metric, (value, unit) in values.items():
                units[metric] = unit
                rule = _rule(thresholds, metric)
                breach = rule.breach(value) if rule is not None else None
                if (breach is not None) == (metric in open_):
                    continue
                if breach is None:
                    open_.discard(metric)
                else:
                    open_.add(metric)
                alerts.append(_threshold_alert(device_id, metric, when, value, unit, breach))
        stored = [
            (
                when,
                {
                    "timestamp": _rfc3339(when),
                    **sample.model_dump(
                        mode="json", exclude_defaults=True, exclude={"timestamp", "device_id"}
                    ),
                },
            )
            for when, sample in samples
        ]
        return SamplePlan(
            samples=tuple(stored),
            stats=stats,
            units=units,
            opened=frozenset(open_ - breaches),
            closed=frozenset(breaches - open_),
            alerts=tuple(alerts),
            effects=tuple(alert_effects(tenant_id, alerts)) if alerts else (),
        )

    async def latest(self, tenant_id: str, device_id: str) -> dict[str, Any]:
        """The device's latest sample; `NoTelemetry` before its first."""
        found = await self._store.latest_sample(tenant_id, device_id)
        if found is None:
            raise NoTelemetry()
        return found.sample

    async def series(
        self,
        tenant_id: str,
        device_id: str,
        *,
        metrics: Sequence[str],
        start: datetime | None,
        end: datetime | None,
        bucket: int | None,
    ) -> Range:
        """The metrics (all the device has, when none is named) downsampled over a range.

        The range defaults to the last hour; its bounds are taken to whole minutes.
        """
        if len(metrics) > _MAX_SERIES:
            raise InvalidRequest(f"metric: at most {_MAX_SERIES} a query, not {len(metrics)}")
        for metric in metrics:
            try:
                check_metric(metric)
            except ValueError as exc:
                raise InvalidRequest(f"metric: {exc}") from None
            if metric.endswith("/*"):
                raise InvalidRequest(f"metric: name one metric, not a family ({metric})")
        end = _to_minute(end or self._clock(), up=True)
        start = _to_minute(start or end - timedelta(hours=1), up=False)
        if start >= end:
            raise InvalidRequest("from must be before to")
        size = choose_bucket(start, end, bucket)
        found = await self._store.minutes(
            tenant_id,
            device_id,
            metrics=list(metrics) or None,
            start=start,
            end=end,
            step=span_for(start, end, size),
        )
        names = list(metrics) or sorted(found)
        series = []
        for name in names:
            unit, minutes = found.get(name, ("", []))
            points = downsample(minutes, start=start, end=end, bucket=size)
            series.append(Series(metric=name, unit=unit, points=points))
        return Range(start=start, end=end, bucket=size, series=series)

    async def _current_thresholds(self, tenant_id: str) -> Thresholds:
        """The tenant's thresholds, read again once they are `thresholds_ttl` seconds old."""
        cached = self._cached.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < self._thresholds_ttl:
            return cached[1]
        thresholds = await self._store.get_thresholds(tenant_id)
        self._cached[tenant_id] = (time.monotonic(), thresholds)
        return thresholds

    async def thresholds(self, tenant_id: str) -> Thresholds:
        """The tenant's thresholds by metric."""
        return await self._store.get_thresholds(tenant_id)

    async def set_thresholds(self, tenant_id: str, body: Any) -> None:
        """Replace the tenant's thresholds (`{"<metric>": {"min": …, "max": …}, …}`)."""
        if not isinstance(body, dict):
            raise InvalidRequest('the body must be an object: {"<metric>": {"min", "max"}}')
        if len(body) > _MAX_THRESHOLDS:
            raise InvalidRequest(f"at most {_MAX_THRESHOLDS} thresholds, this has {len(body)}")
        rules: Thresholds = {}
        for metric, raw in body.items():
            try:
                check_metric(metric)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
            rules[metric] = parse(Threshold, raw, metric)
        await self._store.set_thresholds(tenant_id, rules)
        self._cached.pop(tenant_id, None)

    async def follow(
        self, tenant_id: str, device_id: str, *, after: int | None, idle: float
    ) -> AsyncIterator[StreamedSample | None]:
        """The device's samples as they arrive, after sequence `after` (else from now on).

        Yields None after `idle` seconds without a sample, so the caller can keep the
        connection alive and notice a client that left.
        """
        if after is None:
            latest = await self._store.latest_sample(tenant_id, device_id)
            after = latest.seq if latest else 0
        waited = 0.0
        while True:
            fresh = await self._store.samples_after(tenant_id, device_id, after)
            for item in fresh:
                after = item.seq
                yield item
            if fresh:
                waited = 0.0
            elif waited >= idle:
                waited = 0.0
                yield None
            await asyncio.sleep(self._poll_interval)
            waited += self._poll_interval


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _to_minute(when: datetime, *, up: bool) -> datetime:
    floor = when.astimezone(UTC).replace(second=0, microsecond=0)
    return floor + timedelta(minutes=1) if up and floor != when else floor
