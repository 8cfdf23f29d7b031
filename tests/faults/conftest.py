"""Fixtures of the fault tests: the whole server as real processes, to kill and to signal.

Each module here is marked `faults` (`pytest -m faults` runs them, `-m "not faults"` skips
them). `launch` starts launchers that belong to one test; `shared_launcher` is one ready
stack for a whole module, for tests that leave it running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.faults.stack import RunningLauncher, ready_launcher

Launch = Callable[..., RunningLauncher]


@pytest.fixture
def launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launch]:
    """Start launchers (`via_make=True`: through `make run`), killed with all they left after."""
    started: list[RunningLauncher] = []

    def start(*, via_make: bool = False) -> RunningLauncher:
        launcher = RunningLauncher(tmp_path_factory.mktemp("launcher"), via_make=via_make)
        started.append(launcher)
        return launcher

    try:
        yield start
    finally:
        for launcher in started:
            launcher.close()


@pytest.fixture(scope="module")
def shared_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLauncher]:
    """One ready stack for a module's tests: a single start for many faults."""
    with ready_launcher(tmp_path_factory.mktemp("launcher")) as launcher:
        yield launcher
