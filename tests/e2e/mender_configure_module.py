#!/usr/bin/env python3
"""A `mender-configure` update module for the end-to-end tests (Mender's own is not packaged).

It reads the payload as Mender's module does: the configuration is the payload's meta-data,
`<files>/header/meta-data`, a JSON object of strings. ArtifactInstall keeps the current file
for a rollback and writes the new one; ArtifactCommit reports the configuration to the
server (`PUT /api/devices/v1/deviceconfig/configuration`) with the token and the server
address the client hands out over D-Bus, as Mender's inventory script does; a failed report
fails the commit, so the client rolls back. ArtifactRollback restores the previous file.

The configuration file is /etc/mender/mender-configure/device-config.json: in the test
sandbox's mount namespace, a directory of the sandbox. A file `fail-once` beside it makes the
next ArtifactInstall fail, and is removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

CONFIG = Path("/etc/mender/mender-configure/device-config.json")
FAIL_ONCE = CONFIG.with_name("fail-once")
REPORT_PATH = "/api/devices/v1/deviceconfig/configuration"
_DBUS_STRING = re.compile(r'^\s*string "(.*)"\s*$', re.MULTILINE)


def _write(path: Path, data: bytes) -> None:
    """Replace `path` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(data)
    partial.chmod(0o600)
    os.replace(partial, path)


def _configuration(files: Path) -> bytes:
    raw = (files / "header" / "meta-data").read_bytes()
    document = json.loads(raw)
    if not isinstance(document, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in document.items()
    ):
        raise SystemExit("mender-configure: the meta-data is not an object of strings")
    return raw


def install(files: Path) -> None:
    """Keep the current configuration for a rollback, then write the new one."""
    configuration = _configuration(files)
    if FAIL_ONCE.exists():
        FAIL_ONCE.unlink()
        raise SystemExit("mender-configure: failing this attempt as fail-once asks")
    tmp = files / "tmp"
    if CONFIG.exists():
        shutil.copy2(CONFIG, tmp / "backup.json")
    else:
        (tmp / "no-original").touch()
    _write(CONFIG, configuration)


def rollback(files: Path) -> None:
    """Put back what was there before the install."""
    tmp = files / "tmp"
    if (tmp / "no-original").exists():
        CONFIG.unlink(missing_ok=True)
    elif (tmp / "backup.json").exists():
        _write(CONFIG, (tmp / "backup.json").read_bytes())


def report() -> None:
    """Report the applied configuration with the client's token, through its local proxy."""
    reply = subprocess.run(
        [
            "dbus-send",
            "--system",
            "--print-reply",
            "--dest=io.mender.AuthenticationManager",
            "/io/mender/AuthenticationManager",
            "io.mender.Authentication1.GetJwtToken",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    found = _DBUS_STRING.findall(reply)
    if len(found) < 2 or not all(found[:2]):
        raise SystemExit(f"mender-configure: no token and server from the client: {reply!r}")
    token, server = found[:2]
    request = urllib.request.Request(
        server.rstrip("/") + REPORT_PATH,
        data=CONFIG.read_bytes(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 204:
            raise SystemExit(f"mender-configure: the server answered {response.status}")


def main(state: str, files: Path) -> None:
    """Handle one state of the update module protocol (v3)."""
    if state == "SupportsRollback":
        sys.stdout.write("Yes\n")
    elif state == "NeedsArtifactReboot":
        sys.stdout.write("No\n")
    elif state == "ArtifactInstall":
        install(files)
    elif state == "ArtifactCommit":
        report()
    elif state == "ArtifactRollback":
        rollback(files)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
