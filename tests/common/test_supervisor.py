"""The restart policy: backoff, starting over after a stable run, giving up, order."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import pytest

from common.localstack.supervisor import (
    FIRST_DELAY,
    MAX_CRASHES,
    STABLE_AFTER,
    CrashLoop,
    Supervisor,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Children:
    """Children that exit when a test says so; restarts are recorded."""

    def __init__(self) -> None:
        self.exited: dict[str, int] = {}
        self.restarts: list[str] = []
        self.failing: set[str] = set()
        self._next_pid = 100

    def down(self) -> dict[str, int]:
        return dict(self.exited)

    def restart(self, name: str) -> int:
        self.restarts.append(name)
        if name in self.failing:
            raise RuntimeError(f"{name} would not start")
        del self.exited[name]
        self._next_pid += 1
        return self._next_pid


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def children() -> _Children:
    return _Children()


@pytest.fixture
def supervisor(children: _Children, clock: _Clock) -> Supervisor:
    return Supervisor(children, first="database", clock=clock)


_STEP = 0.25


def _run_until(supervisor: Supervisor, clock: _Clock, done: Callable[[], bool]) -> None:
    """Check every quarter of a second until `done()`."""
    for _ in range(1000):
        if done():
            return
        supervisor.check()
        clock.now += _STEP
    raise AssertionError("not done in 250 s")


def _crash_and_restart(
    children: _Children, supervisor: Supervisor, clock: _Clock, name: str
) -> float:
    """Let `name` exit and run the supervisor until it restarts it; the delay it waited."""
    children.exited[name] = 1
    started = clock.now
    count = len(children.restarts)
    _run_until(supervisor, clock, lambda: len(children.restarts) > count)
    return clock.now - _STEP - started


class TestRestart:
    def test_restarted_after_the_first_delay(
        self,
        children: _Children,
        supervisor: Supervisor,
        clock: _Clock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="common.localstack.supervisor")
        children.exited["useradm"] = -signal.SIGKILL
        supervisor.check()
        assert children.restarts == []
        clock.now += FIRST_DELAY / 2
        supervisor.check()
        assert children.restarts == []

        clock.now += FIRST_DELAY / 2
        supervisor.check()
        assert children.restarts == ["useradm"]
        assert children.down() == {}
        assert caplog.messages == [
            "useradm was killed by SIGKILL; restarting it in 0.5 s",
            "useradm restarted (pid 101)",
        ]

    def test_running_children_are_left_alone(
        self, children: _Children, supervisor: Supervisor, clock: _Clock
    ) -> None:
        for _ in range(10):
            supervisor.check()
            clock.now += 1
        assert children.restarts == []

    def test_delay_doubles_while_it_keeps_crashing(
        self, children: _Children, supervisor: Supervisor, clock: _Clock
    ) -> None:
        delays = [
            _crash_and_restart(children, supervisor, clock, "useradm")
            for _ in range(MAX_CRASHES - 1)
        ]
        assert delays == [FIRST_DELAY * 2**n for n in range(MAX_CRASHES - 1)]

    def test_a_stable_run_starts_over(
        self, children: _Children, supervisor: Supervisor, clock: _Clock
    ) -> None:
        for _ in range(MAX_CRASHES - 1):
            _crash_and_restart(children, supervisor, clock, "useradm")
        clock.now += STABLE_AFTER

        assert _crash_and_restart(children, supervisor, clock, "useradm") == FIRST_DELAY

    def test_each_child_has_its_own_count(
        self, children: _Children, supervisor: Supervisor, clock: _Clock
    ) -> None:
        for _ in range(MAX_CRASHES - 1):
            _crash_and_restart(children, supervisor, clock, "useradm")

        assert _crash_and_restart(children, supervisor, clock, "gateway") == FIRST_DELAY


class TestGiveUp:
    def test_crash_loop(self, children: _Children, supervisor: Supervisor, clock: _Clock) -> None:
        for _ in range(MAX_CRASHES - 1):
            _crash_and_restart(children, supervisor, clock, "gateway")
        children.exited["gateway"] = 3

        with pytest.raises(CrashLoop) as raised:
            supervisor.check()
        assert raised.value.name == "gateway"
        assert str(raised.value) == (
            f"gateway exited with code 3, the {MAX_CRASHES}th time in a row within "
            f"{STABLE_AFTER:g} s of starting: giving up"
        )
        assert children.restarts == ["gateway"] * (MAX_CRASHES - 1)

    def test_failed_restart_counts_as_a_crash(
        self,
        children: _Children,
        supervisor: Supervisor,
        clock: _Clock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="common.localstack.supervisor")
        children.failing.add("database")
        children.exited["database"] = -signal.SIGKILL
        _run_until(supervisor, clock, lambda: len(children.restarts) == MAX_CRASHES - 1)
        assert "database did not start again: database would not start" in caplog.messages

        with pytest.raises(CrashLoop, match=r"^database was killed by SIGKILL, the 5th time"):
            _run_until(supervisor, clock, lambda: False)
        assert children.restarts == ["database"] * (MAX_CRASHES - 1)


class TestOrder:
    def test_the_database_comes_back_before_the_services(
        self, children: _Children, supervisor: Supervisor, clock: _Clock
    ) -> None:
        children.exited.update({"useradm": 1, "database": -signal.SIGKILL})
        children.failing.add("database")
        # While the database does not start, nothing else is restarted.
        _run_until(supervisor, clock, lambda: len(children.restarts) == 3)
        assert children.restarts == ["database"] * 3

        children.failing.clear()
        _run_until(supervisor, clock, lambda: "useradm" in children.restarts)
        assert children.restarts == ["database"] * 4 + ["useradm"]
        assert children.down() == {}
