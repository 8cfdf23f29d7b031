"""Stopping `make run` leaves nothing behind, however the signal arrives.

Through the real chain `make run` → `uv run` → `python -m common.localstack.launcher` → children: a
Ctrl-C reaches the whole foreground process group, a service manager or `timeout` signals
`make` alone; and a launcher killed outright takes its children with it.
"""

from __future__ import annotations

import signal

import pytest

from common.localstack.launcher import DATABASE
from tests.faults.conftest import Launch
from tests.faults.stack import READY, RunningLauncher
from tests.toolkit import is_running, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def _assert_stopped_cleanly(launcher: RunningLauncher, children: dict[str, int]) -> None:
    launcher.proc.wait(60)
    launcher.wait_all_gone()
    assert [pid for pid in children.values() if is_running(pid)] == []
    console = launcher.console()
    assert console.count("Stopping Fleetport ...") == 1
    assert "Fleetport stopped" in console


class TestMakeRun:
    def test_ctrl_c_to_the_process_group(self, launch: Launch) -> None:
        launcher = launch(via_make=True)
        launcher.wait_ready()
        assert launcher.login().status_code == 200
        children = launcher.children()
        assert set(children) >= {DATABASE, "useradm", "gateway"}

        launcher.signal(signal.SIGINT, group=True)
        _assert_stopped_cleanly(launcher, children)

    def test_sigterm_to_make_alone(self, launch: Launch) -> None:
        launcher = launch(via_make=True)
        launcher.wait_ready()
        children = launcher.children()
        assert set(children) >= {DATABASE, "useradm", "gateway"}

        launcher.signal(signal.SIGTERM)
        _assert_stopped_cleanly(launcher, children)


class TestLauncher:
    def test_signals_while_starting(self, launch: Launch) -> None:
        launcher = launch()

        def services_started() -> dict[str, int] | None:
            children = launcher.children()
            return children if children.keys() > {DATABASE} else None

        children = wait_until(services_started, timeout=120, what="the services started")
        launcher.signal(signal.SIGTERM)
        launcher.signal(signal.SIGINT)

        assert launcher.proc.wait(60) == 0
        assert launcher.stack_processes() == {}
        assert [pid for pid in children.values() if is_running(pid)] == []
        console = launcher.console()
        assert READY not in console
        assert console.count("Stopping Fleetport ...") == 1

    def test_killed_launcher_takes_its_children_along(self, launch: Launch) -> None:
        launcher = launch()
        launcher.wait_ready()
        children = launcher.children()
        assert set(children) >= {DATABASE, "useradm", "gateway"}

        launcher.signal(signal.SIGKILL)
        launcher.proc.wait()
        # Each child was told by the kernel (SIGTERM) that its parent died, and stopped.
        launcher.wait_all_gone(timeout=20)
        assert [pid for pid in children.values() if is_running(pid)] == []
