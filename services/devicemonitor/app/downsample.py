"""Per-minute statistics: gathering readings into them, and downsampling them into buckets.

Readings are kept per metric and minute (count, sum, lowest, highest), and per five minutes;
a range is answered by merging those into buckets of a whole number of minutes, aligned on
the epoch so that the same bucket has the same bounds in every query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

from services.devicemonitor.app.errors import InvalidRequest
from services.devicemonitor.models import MinuteStats, Point

__all__ = [
    "MAX_POINTS",
    "MINUTE",
    "HourStats",
    "choose_bucket",
    "downsample",
    "gather",
    "hour_of",
    "span_for",
]

MINUTE: Final = 60
_FIVE_MINUTES: Final = 300
# Most buckets one series may have, and how many a range gets by default.
MAX_POINTS: Final = 10_000
_DEFAULT_POINTS: Final = 300

# hour → metric → minute of the hour → statistics
HourStats = dict[datetime, dict[str, dict[int, MinuteStats]]]


def hour_of(when: datetime) -> datetime:
    """The start of the (UTC) hour `when` falls in."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def gather(stats: HourStats, when: datetime, values: Mapping[str, tuple[float, str]]) -> None:
    """Add one sample's readings to the statistics of its minute."""
    minutes = stats.setdefault(hour_of(when), {})
    minute = when.astimezone(UTC).minute
    for metric, (value, _) in values.items():
        per_minute = minutes.setdefault(metric, {})
        current = per_minute.get(minute)
        one = MinuteStats.of(value)
        per_minute[minute] = one if current is None else current.merge(one)


def _epoch_seconds(when: datetime) -> int:
    return int(when.timestamp())


def choose_bucket(start: datetime, end: datetime, bucket: int | None) -> int:
    """The bucket size in seconds: as given (whole minutes), or about 300 buckets' worth."""
    span = _epoch_seconds(end) - _epoch_seconds(start)
    if bucket is None:
        minutes = max(1, -(-span // (_DEFAULT_POINTS * MINUTE)))
        return minutes * MINUTE
    if bucket < MINUTE or bucket % MINUTE:
        raise InvalidRequest(f"bucket: {bucket} s is not a whole number of minutes")
    if span // bucket > MAX_POINTS:
        raise InvalidRequest(
            f"bucket: {bucket} s over {span} s gives {span // bucket} points; "
            f"at most {MAX_POINTS}, so a bucket of at least {-(-span // MAX_POINTS)} s"
        )
    return bucket


def span_for(start: datetime, end: datetime, bucket: int) -> int:
    """The statistics a range reads: per five minutes when its bounds and buckets are whole
    multiples of five minutes (a fifth of the data), else per minute."""
    aligned = (_epoch_seconds(start), _epoch_seconds(end), bucket)
    return _FIVE_MINUTES if all(v % _FIVE_MINUTES == 0 for v in aligned) else MINUTE


def downsample(
    minutes: Iterable[tuple[int, MinuteStats]],
    *,
    start: datetime,
    end: datetime,
    bucket: int,
) -> list[Point]:
    """Merge the minutes in [start, end) into buckets of `bucket` seconds, oldest first."""
    low, high = _epoch_seconds(start), _epoch_seconds(end)
    merged: dict[int, MinuteStats] = {}
    for at, stats in minutes:
        if not low <= at < high:
            continue
        key = at - at % bucket
        current = merged.get(key)
        merged[key] = stats if current is None else current.merge(stats)
    return [
        Point(
            t=datetime.fromtimestamp(key, UTC).isoformat().replace("+00:00", "Z"),
            min=s.low,
            avg=s.total / s.n,
            max=s.high,
            n=s.n,
        )
        for key, s in sorted(merged.items())
    ]
