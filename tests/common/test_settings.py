"""Settings from files: `<PREFIX><NAME>_FILE` names the file that holds a setting's value."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

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
