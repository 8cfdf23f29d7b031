"""Fixtures of the end-to-end tests: real Mender clients and mender-cli against the stack."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import pytest

from common.localstack.launcher import Stack
from tests.e2e.api import ManagementApi, unique_identity
from tests.e2e.tools import (
    DBUS_DAEMON,
    MENDER,
    MENDER_ARTIFACT,
    MENDER_CLI,
    MenderCli,
    MenderDevice,
)

# The lines of `mender -l debug daemon` the tests wait for.
AUTHORIZED: Final = r"successfully received new authorization data"
UPDATE_CHECK: Final = r"Handling update check state"

_REQUIRED: Final = {
    "mender (Debian package mender-client)": MENDER,
    "mender-cli": MENDER_CLI,
    "mender-artifact": MENDER_ARTIFACT,
    "dbus-daemon (Debian package dbus)": DBUS_DAEMON,
}
_LOG_TAIL: Final = 3000


@pytest.fixture(scope="session", autouse=True)
def _e2e_prerequisites() -> None:
    """Fail (never skip) when the real tools or the privileges they need are missing."""
    missing = [name for name, path in _REQUIRED.items() if not os.access(path, os.X_OK)]
    if shutil.which("unshare") is None:
        missing.append("unshare (Debian package util-linux)")
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if os.geteuid() != 0:
        problems.append("the device sandboxes need root (unshare -m and bind mounts)")
    if problems:
        pytest.fail(
            "the end-to-end tests drive the real Mender tools: "
            + "; ".join(problems)
            + " — install them as root with `make e2e-deps`",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def cli(
    stack: Stack, admin: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> MenderCli:
    """A `mender-cli` logged in as the admin."""
    tool = MenderCli(tmp_path_factory.mktemp("mender-cli"), stack.url)
    tool.login(*admin)
    return tool


class DeviceFactory:
    """Makes sandboxed real clients for one test and takes them all down afterwards."""

    def __init__(self, root: Path, server_url: str, api: ManagementApi) -> None:
        """Sandboxes go under `root`; the clients talk to `server_url`."""
        self.root = root
        self.server_url = server_url
        self.api = api
        self.devices: list[MenderDevice] = []

    def new(
        self, prefix: str = "dev", *, identity: dict[str, str] | None = None, **options: Any
    ) -> MenderDevice:
        """Describe a client (a unique mac/serial identity unless one is given)."""
        device = MenderDevice(
            self.root / f"{prefix}-{len(self.devices)}",
            self.server_url,
            identity=identity or unique_identity(prefix),
            **options,
        )
        self.devices.append(device)
        return device

    def start(self, *devices: MenderDevice) -> None:
        """Start clients side by side."""
        if len(devices) == 1:
            devices[0].start()
            return
        with ThreadPoolExecutor(max_workers=len(devices)) as pool:
            for future in [pool.submit(d.start) for d in devices]:
                future.result()

    def admit(self, device: MenderDevice, *, timeout: float = 30.0) -> str:
        """Accept a started client's pending auth set and wait until it holds a token."""
        since = len(device.log_text())
        found = self.api.wait_for_device(device.identity, status="pending", timeout=timeout)
        self.api.accept(found)
        device.wait_for_log(AUTHORIZED, timeout=timeout, since=since)
        return str(found["id"])

    def admit_all(self, *devices: MenderDevice) -> list[str]:
        """`admit` several started clients at once."""
        with ThreadPoolExecutor(max_workers=max(1, len(devices))) as pool:
            return list(pool.map(self.admit, devices))

    def stop_all(self) -> None:
        """Stop every client this factory made."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.devices))) as pool:
            for future in [pool.submit(d.stop) for d in self.devices]:
                future.result()

    def logs(self) -> str:
        """The tail of every client's log, for a failure report."""
        parts = []
        for device in self.devices:
            text = device.log_text()
            parts.append(f"==== {device.root.name} {device.identity}\n{text[-_LOG_TAIL:]}")
        return "\n".join(parts)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's outcome on the test item (the device factory reads it)."""
    report = yield
    item.stash.setdefault(_OUTCOMES, {})[report.when] = report.failed
    return report


_OUTCOMES: Final = pytest.StashKey[dict[str, bool]]()


@pytest.fixture
def devices(
    request: pytest.FixtureRequest, stack: Stack, api: ManagementApi, tmp_path: Path
) -> Iterator[DeviceFactory]:
    """Real clients for one test; stopped afterwards, their logs shown when the test failed."""
    factory = DeviceFactory(tmp_path, stack.url, api)
    try:
        yield factory
    finally:
        if any(request.node.stash.get(_OUTCOMES, {}).values()):
            sys.stderr.write(factory.logs() + "\n")
        factory.stop_all()


__all__ = ["AUTHORIZED", "UPDATE_CHECK", "DeviceFactory"]
