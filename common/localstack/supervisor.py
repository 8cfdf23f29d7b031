"""Keep a set of child processes running: restart a crashed one with backoff, or give up.

A child that exits is restarted after `FIRST_DELAY`, and the delay doubles each time it
exits again within `STABLE_AFTER` of its restart. The `MAX_CRASHES`-th such exit in a row
means it cannot run here (a broken configuration, a port taken, a full disk): the
supervisor raises `CrashLoop` rather than restart it forever and hide the fault.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from common.localstack.processes import describe_exit

__all__ = ["FIRST_DELAY", "MAX_CRASHES", "STABLE_AFTER", "CrashLoop", "Supervised", "Supervisor"]

FIRST_DELAY: Final = 0.5
STABLE_AFTER: Final = 60.0
MAX_CRASHES: Final = 5

_log = logging.getLogger(__name__)


class Supervised(Protocol):
    """The children a supervisor watches, by name."""

    def down(self) -> dict[str, int]:
        """Children that exited on their own (now reaped), with their exit status."""
        ...

    def restart(self, name: str) -> int:
        """Start an exited child again and return its process id; RuntimeError if it fails."""
        ...


class CrashLoop(RuntimeError):
    """A child kept exiting soon after each restart; the supervisor gave up on it."""

    def __init__(self, name: str, status: int) -> None:
        super().__init__(
            f"{name} {describe_exit(status)}, the {MAX_CRASHES}th time in a row within "
            f"{STABLE_AFTER:g} s of starting: giving up"
        )
        self.name = name


@dataclass
class _History:
    started: float
    crashes: int = 0
    restart_at: float | None = None


class Supervisor:
    """Restarts the children of a `Supervised` when they exit; `first` comes back first."""

    def __init__(
        self,
        children: Supervised,
        *,
        first: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._children = children
        self._first = first
        self._clock = clock
        self._since = clock()
        self._history: dict[str, _History] = {}

    def check(self) -> None:
        """Reap exited children and restart those whose delay is over; CrashLoop to give up."""
        now = self._clock()
        down = self._children.down()
        for name, status in down.items():
            history = self._history.setdefault(name, _History(started=self._since))
            if history.restart_at is None:
                self._schedule(name, history, status, now)
        for name in down:
            if self._first in down and name != self._first:
                continue  # the others need `first`: while it is down, they wait
            history = self._history[name]
            if history.restart_at is not None and history.restart_at <= now:
                self._restart(name, history)

    def _schedule(self, name: str, history: _History, status: int, now: float) -> None:
        quick = now - history.started < STABLE_AFTER
        history.crashes = history.crashes + 1 if quick else 1
        if history.crashes >= MAX_CRASHES:
            raise CrashLoop(name, status)
        delay = FIRST_DELAY * 2 ** (history.crashes - 1)
        history.restart_at = now + delay
        _log.warning("%s %s; restarting it in %g s", name, describe_exit(status), delay)

    def _restart(self, name: str, history: _History) -> None:
        try:
            pid = self._children.restart(name)
        except RuntimeError as exc:
            # Still down: the next check counts this as another quick exit.
            _log.warning("%s did not start again: %s", name, exc)
        else:
            _log.warning("%s restarted (pid %d)", name, pid)
        history.started = self._clock()
        history.restart_at = None
