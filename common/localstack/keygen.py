"""Create the keys and secrets a fresh installation needs, keeping any that already exist.

`python -m common.localstack.keygen DIR` writes `DIR/useradm/private.id.1.pem` (user tokens),
`DIR/deviceauth.pem` (device tokens), `DIR/presign.secret` (download-link HMAC) and
`DIR/iot-manager.key` (encrypts integration credentials at rest). The launcher calls it for
`make run` (docker compose generates its own, one volume per consumer:
`common.localstack.provision`).
"""

from __future__ import annotations

import base64
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from common.core.tokens import generate_key_file, write_secret_file

__all__ = ["KeyPaths", "ensure_keys"]


@dataclass(frozen=True, slots=True)
class KeyPaths:
    """Where the generated keys and secrets live."""

    useradm: Path
    deviceauth: Path
    presign_secret: Path
    iot_manager_key: Path

    def presign_secret_value(self) -> str:
        """The download-link secret."""
        return self.presign_secret.read_text().strip()

    def iot_manager_key_value(self) -> str:
        """iot-manager's credentials key (32 bytes, base64)."""
        return self.iot_manager_key.read_text().strip()


def ensure_keys(directory: Path) -> KeyPaths:
    """Generate whatever is missing under `directory` and return the paths."""
    paths = KeyPaths(
        useradm=directory / "useradm" / "private.id.1.pem",
        deviceauth=directory / "deviceauth.pem",
        presign_secret=directory / "presign.secret",
        iot_manager_key=directory / "iot-manager.key",
    )
    generate_key_file(paths.useradm)
    generate_key_file(paths.deviceauth)
    write_secret_file(paths.presign_secret, secrets.token_urlsafe(32).encode())
    write_secret_file(paths.iot_manager_key, base64.b64encode(secrets.token_bytes(32)))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m common.localstack.keygen DIR")
    ensure_keys(Path(sys.argv[1]))
