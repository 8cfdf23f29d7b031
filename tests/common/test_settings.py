"""Settings from the environment: `<PREFIX><NAME>_FILE` names the file that holds a setting's
value; a duration is plain seconds, as environment variables give them, or ISO 8601."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings, Duration, DurationOrZero
from services.iot_manager.config import Settings as IotSettings
from services.useradm.config import Settings


class TestFromFiles:
    def test_value_read_from_the_named_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = tmp_path / "mongo-url"
        url.write_text("mongodb://useradm:s3cret@db.example:27017/?replicaSet=rs0\n")
        monkeypatch.setenv("USERADM_MONGO_URL_FILE", str(url))
        settings = Settings(dev_mode=True)
        assert settings.mongo_url == "mongodb://useradm:s3cret@db.example:27017/?replicaSet=rs0"

    def test_a_variable_set_directly_wins(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = tmp_path / "mongo-url"
        url.write_text("mongodb://from-file")
        monkeypatch.setenv("USERADM_MONGO_URL_FILE", str(url))
        monkeypatch.setenv("USERADM_MONGO_URL", "mongodb://from-env")
        assert Settings(dev_mode=True).mongo_url == "mongodb://from-env"

    def test_a_secret_from_a_file_is_checked_like_any_other(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key = tmp_path / "aes-key"
        key.write_text("c2hvcnQ=\n")  # base64, but of 5 bytes
        monkeypatch.setenv("IOT_MANAGER_AES_ENCRYPTION_KEY_FILE", str(key))
        with pytest.raises(ValidationError, match="must be 32 bytes, base64-encoded"):
            IotSettings()
        key.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
        assert IotSettings().encryption_keys()[0] == bytes(range(32))

    def test_a_missing_file_is_named(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        missing = tmp_path / "nowhere"
        monkeypatch.setenv("USERADM_MONGO_URL_FILE", str(missing))
        with pytest.raises(ValueError, match=f"USERADM_MONGO_URL_FILE: cannot read {missing}"):
            Settings(dev_mode=True)


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
