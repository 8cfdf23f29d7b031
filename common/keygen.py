"""Create the keys and secrets a fresh installation needs, keeping any that already exist.

`python -m common.keygen DIR` writes `DIR/useradm/private.id.1.pem` (user tokens),
`DIR/deviceauth.pem` (device tokens) and `DIR/presign.secret` (download-link HMAC). The
launcher calls it for `make run`; docker compose runs it once into a shared volume.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from common.tokens import generate_key_file

__all__ = ["KeyPaths", "ensure_keys"]


@dataclass(frozen=True, slots=True)
class KeyPaths:
    """Where the generated keys and secrets live."""

    useradm: Path
    deviceauth: Path
    presign_secret: Path

    def presign_secret_value(self) -> str:
        """The download-link secret."""
        return self.presign_secret.read_text().strip()


def ensure_keys(directory: Path) -> KeyPaths:
    """Generate whatever is missing under `directory` and return the paths."""
    paths = KeyPaths(
        useradm=directory / "useradm" / "private.id.1.pem",
        deviceauth=directory / "deviceauth.pem",
        presign_secret=directory / "presign.secret",
    )
    generate_key_file(paths.useradm)
    generate_key_file(paths.deviceauth)
    if not paths.presign_secret.exists():
        paths.presign_secret.touch(mode=0o600)
        paths.presign_secret.write_text(secrets.token_urlsafe(32))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m common.keygen DIR")
    ensure_keys(Path(sys.argv[1]))
