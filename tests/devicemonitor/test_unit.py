"""Unit tests of the pure parts: metrics of a sample, minute statistics, downsampling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.devicemonitor.app.downsample import (
    HourStats,
    choose_bucket,
    downsample,
    gather,
    span_for,
)
from services.devicemonitor.app.errors import InvalidRequest
from services.devicemonitor.models import MinuteStats, NewSample, Threshold, readings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class TestReadings:
    def test_metric_names_and_units(self) -> None:
        sample = NewSample.model_validate(
            {
                "hwmon": {"fanspeed": [{"name": "FAN 1", "value": 2400, "unit": "RPM"}]},
                "cpu": {"total": 5, "cores": [4, 6]},
                "memory": {"used": 1},
                "host": {"uptime": 12},
            }
        )
        assert readings(sample) == {
            "fanspeed/FAN 1": (2400.0, "RPM"),
            "cpu/total": (5.0, "%"),
            "cpu/0": (4.0, "%"),
            "cpu/1": (6.0, "%"),
            "memory/used": (1.0, "bytes"),
        }


class TestGather:
    def test_minutes_of_an_hour(self) -> None:
        stats: HourStats = {}
        for second, value in ((0, 3.0), (30, 1.0), (59, 2.0), (60, 7.0)):
            gather(stats, T0 + timedelta(seconds=second), {"cpu/total": (value, "%")})
        assert stats == {
            T0: {"cpu/total": {0: MinuteStats(3, 6.0, 1.0, 3.0), 1: MinuteStats.of(7.0)}}
        }

    def test_hours_apart(self) -> None:
        stats: HourStats = {}
        gather(stats, T0 - timedelta(seconds=1), {"m": (1.0, "")})
        gather(stats, T0, {"m": (2.0, "")})
        assert sorted(stats) == [T0 - timedelta(hours=1), T0]
        assert stats[T0 - timedelta(hours=1)]["m"] == {59: MinuteStats.of(1.0)}


class TestBuckets:
    def test_default_about_300_points(self) -> None:
        assert choose_bucket(T0, T0 + timedelta(hours=1), None) == 60
        assert choose_bucket(T0, T0 + timedelta(days=1), None) == 300
        assert choose_bucket(T0, T0 + timedelta(days=30), None) == 8640

    @pytest.mark.parametrize(
        ("bucket", "fragment"),
        [(30, "not a whole number of minutes"), (61, "not a whole number"), (60, "at most")],
    )
    def test_refused(self, bucket: int, fragment: str) -> None:
        with pytest.raises(InvalidRequest, match=fragment):
            choose_bucket(T0, T0 + timedelta(days=30), bucket)

    def test_five_minute_statistics_when_aligned(self) -> None:
        assert span_for(T0, T0 + timedelta(days=1), 300) == 300
        assert span_for(T0, T0 + timedelta(days=1), 600) == 300
        assert span_for(T0, T0 + timedelta(days=1), 60) == 60
        assert span_for(T0 + timedelta(minutes=1), T0 + timedelta(days=1), 300) == 60
        assert span_for(T0, T0 + timedelta(minutes=61), 300) == 60

    def test_downsample_aligned_and_clipped(self) -> None:
        start = int(T0.timestamp())
        minutes = [(start + 60 * m, MinuteStats.of(float(m))) for m in range(-1, 12)]
        points = downsample(
            minutes, start=T0 + timedelta(minutes=3), end=T0 + timedelta(minutes=11), bucket=300
        )
        assert points == [
            {"t": "2026-03-01T12:00:00Z", "min": 3.0, "avg": 3.5, "max": 4.0, "n": 2},
            {"t": "2026-03-01T12:05:00Z", "min": 5.0, "avg": 7.0, "max": 9.0, "n": 5},
            {"t": "2026-03-01T12:10:00Z", "min": 10.0, "avg": 10.0, "max": 10.0, "n": 1},
        ]


class TestThreshold:
    def test_breach(self) -> None:
        rule = Threshold(min=11.4, max=12.6)
        assert rule.breach(12.0) is None
        assert rule.breach(12.7) == "above the maximum 12.6"
        assert rule.breach(11.0) == "below the minimum 11.4"
        assert Threshold(max=80).breach(80) is None
