"""Keys and secrets of a new installation are created once and then kept."""

from __future__ import annotations

import base64
from pathlib import Path

from common.localstack.keygen import ensure_keys


class TestEnsureKeys:
    def test_iot_manager_key(self, tmp_path: Path) -> None:
        keys = ensure_keys(tmp_path)
        assert len(base64.b64decode(keys.iot_manager_key_value(), validate=True)) == 32
        assert keys.iot_manager_key.stat().st_mode & 0o777 == 0o600
        assert ensure_keys(tmp_path).iot_manager_key_value() == keys.iot_manager_key_value()
        assert keys.presign_secret_value() != keys.iot_manager_key_value()
