"""Durations in settings: plain seconds, as environment variables give them, or ISO 8601."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings, Duration, DurationOrZero


class _Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_", extra="ignore", frozen=True)

    interval: Duration = timedelta(hours=1)
    drain: DurationOrZero = timedelta(seconds=10)


class TestDuration:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("90", timedelta(seconds=90)),
            ("2.5", timedelta(seconds=2.5)),
            ("PT1H30M", timedelta(hours=1, minutes=30)),
            ("01:00:05", timedelta(hours=1, seconds=5)),
        ],
    )
    def test_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, raw: str, expected: timedelta
    ) -> None:
        monkeypatch.setenv("EXAMPLE_INTERVAL", raw)
        assert _Settings().interval == expected

    def test_default_when_unset(self) -> None:
        assert _Settings().interval == timedelta(hours=1)

    @pytest.mark.parametrize("raw", ["0", "-5", "soon", "inf", "nan"])
    def test_refused(self, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
        monkeypatch.setenv("EXAMPLE_INTERVAL", raw)
        with pytest.raises(ValidationError, match="interval"):
            _Settings()

    def test_zero_where_allowed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("EXAMPLE_DRAIN", "0")
        assert _Settings().drain == timedelta(0)
