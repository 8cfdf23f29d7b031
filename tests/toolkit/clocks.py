"""A clock for TTL and expiry tests: time moves only when the test moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

__all__ = ["ManualClock", "clock"]


class ManualClock:
    """Monotonic seconds, wall-clock seconds and the UTC date, moving together by hand.

    Hand its bound methods to what takes a clock: `monotonic` and `time` to the gateway's
    token cache, `now` to deviceauth.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = (start or datetime.now(UTC)).timestamp()
        self._elapsed = 1000.0

    def advance(self, by: float | timedelta) -> None:
        """Move time forward by seconds or a timedelta."""
        seconds = by.total_seconds() if isinstance(by, timedelta) else by
        assert seconds >= 0, "time only moves forward"
        self._elapsed += seconds
        self._wall += seconds

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (like `time.monotonic`)."""
        return self._elapsed

    def time(self) -> float:
        """Seconds since the epoch (like `time.time`)."""
        return self._wall

    def now(self) -> datetime:
        """The current UTC date and time."""
        return datetime.fromtimestamp(self._wall, UTC)


@pytest.fixture
def clock() -> ManualClock:
    """A hand-moved clock starting at the real current time."""
    return ManualClock()
