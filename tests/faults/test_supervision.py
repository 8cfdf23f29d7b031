"""`make run` supervises: a killed process comes back, one that keeps crashing stops it all.

The tests share one stack where they can; the last test of the module stops it.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Final

import httpx
import pytest

from common.localstack.launcher import DATABASE
from common.localstack.supervisor import MAX_CRASHES
from tests.e2e.api import ManagementApi, RawDevice, unique_identity
from tests.faults.conftest import Launch
from tests.faults.stack import RunningLauncher, cmdline
from tests.toolkit import is_running, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

# A restarted service imports its whole framework again: slow on a busy two-core machine.
HEALTHY: Final = 60.0


def _answered(request: Callable[[], httpx.Response], status: int, what: str) -> httpx.Response:
    """Repeat a request until it is answered with `status` (the stack recovering)."""

    def probe() -> httpx.Response | None:
        response = request()
        return response if response.status_code == status else None

    return wait_until(probe, timeout=HEALTHY, what=what)


def _login_token(launcher: RunningLauncher) -> str:
    """Log in through the gateway as soon as it works again; the token."""
    response = _answered(launcher.login, 200, "a login through the gateway")
    assert response.headers["content-type"] == "application/jwt"
    return response.text


class TestKilledProcessComesBack:
    def test_service(self, shared_launcher: RunningLauncher) -> None:
        before = shared_launcher.children()
        os.kill(before["useradm"], signal.SIGKILL)

        pid = shared_launcher.restarted("useradm", before["useradm"])
        assert not Path(f"/proc/{before['useradm']}").exists(), "the killed process not reaped"
        wait_until(
            lambda: _status(shared_launcher.health_url("useradm")) == 204,
            timeout=HEALTHY,
            what="useradm healthy",
        )
        _login_token(shared_launcher)
        assert shared_launcher.children() == {**before, "useradm": pid}
        for text in (shared_launcher.console(), shared_launcher.launcher_log()):
            assert "useradm was killed by SIGKILL; restarting it in 0.5 s" in text
            assert f"useradm restarted (pid {pid})" in text

    def test_database(self, shared_launcher: RunningLauncher) -> None:
        before = shared_launcher.children()
        command = cmdline(before[DATABASE])
        os.kill(before[DATABASE], signal.SIGKILL)

        pid = shared_launcher.restarted(DATABASE, before[DATABASE])
        assert not Path(f"/proc/{before[DATABASE]}").exists(), "the killed process not reaped"
        assert cmdline(pid) == command  # the same port and storage
        # The admin created before the crash logs in: the data survived it.
        token = _login_token(shared_launcher)
        device = RawDevice(shared_launcher.url, unique_identity("faults"))
        with closing(ManagementApi(shared_launcher.url, token)) as api, closing(device):
            refused = _answered(device.auth_request, 401, "the device's auth request")
            assert set(refused.json()) == {"error", "request_id"}
            pending = api.wait_for_device(device.identity, status="pending")
            api.accept(pending)
            assert device.auth_request().status_code == 200
            wait_until(
                lambda: api.inventory_device(pending["id"]),
                what="the device provisioned in inventory",
            )
            assert device.check_next().status_code == 204
        # The services were not restarted: they reconnected to the database by themselves.
        assert shared_launcher.children() == {**before, DATABASE: pid}
        for text in (shared_launcher.console(), shared_launcher.launcher_log()):
            assert "database was killed by SIGKILL; restarting it in 0.5 s" in text
            assert f"database restarted (pid {pid})" in text


class TestCrashLoop:
    def test_gives_up_and_stops_everything(self, launch: Launch) -> None:
        launcher = launch()
        launcher.wait_ready()
        gateway = launcher.children()["gateway"]
        os.kill(gateway, signal.SIGKILL)
        # Its port taken, the gateway cannot start again (uvicorn's start-up failure: 3).
        with _port_taken(launcher.port):
            assert launcher.proc.wait(120) == 1
            assert launcher.stack_processes() == {}
        console = launcher.console()
        assert console.count("gateway restarted (pid ") == MAX_CRASHES - 1
        assert (
            f"gateway exited with code 3, the {MAX_CRASHES}th time in a row within 60 s of "
            f"starting: giving up (see {launcher.state_dir / 'logs' / 'gateway.log'}); "
            "stopping Fleetport"
        ) in console
        assert console.rstrip().endswith("Fleetport stopped")
        assert "address already in use" in (launcher.state_dir / "logs" / "gateway.log").read_text()


class TestStopSignals:
    # Last in the module: it stops the shared stack.
    def test_repeated_signals_stop_everything_once(self, shared_launcher: RunningLauncher) -> None:
        children = shared_launcher.children()
        assert set(children) >= {DATABASE, "useradm", "deviceauth", "gateway"}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            shared_launcher.signal(signum)

        assert shared_launcher.proc.wait(60) == 0
        # The launcher returns only once every child is stopped and reaped.
        assert [pid for pid in children.values() if is_running(pid)] == []
        assert shared_launcher.stack_processes() == {}
        console = shared_launcher.console()
        assert console.count("Stopping Fleetport ...") == 1
        assert console.rstrip().endswith("Fleetport stopped")
        assert (shared_launcher.state_dir / "db").is_dir()
        assert (shared_launcher.state_dir / "keys" / "deviceauth.pem").is_file()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5.0).status_code
    except httpx.TransportError:
        return None


@contextmanager
def _port_taken(port: int) -> Iterator[None]:
    """Listen on a port as soon as it is free (its killed owner may still be exiting)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def bound() -> bool:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

        wait_until(bound, timeout=5.0, interval=0.01, what=f"port {port} free")
        sock.listen()
        yield
