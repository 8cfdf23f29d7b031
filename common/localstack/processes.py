"""Child processes that cannot outlive their parent and stop with everything they started.

Each child runs in its own session, so one signal to its process group reaches whatever it
starts in turn, and a Ctrl-C meant for the launcher does not hit it directly: the launcher
decides the order things stop in. On Linux the kernel sends the child SIGTERM when the
thread that started it ends, so even a parent killed with SIGKILL leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

__all__ = ["describe_exit", "spawn", "stop_all"]

# From <linux/prctl.h>: the signal a process receives when its parent thread ends.
_PR_SET_PDEATHSIG: Final = 1
_LIBC: Final = ctypes.CDLL(None, use_errno=True)


def _die_with(parent: int) -> Callable[[], None]:
    def prepare() -> None:  # runs in the child between fork and exec: keep it minimal
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died before the request above took effect.
        if os.getppid() != parent:
            os._exit(1)

    return prepare


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, output appended to `log`, ended with its parent.

    The child receives SIGTERM when the thread that called `spawn` ends (not only the
    process): start long-lived children from a thread that lives as long as they should.
    """
    with log.open("ab") if log is not None else open(os.devnull, "wb") as out:
        return subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),
        )


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:  # the group is already empty
        pass


def stop_all(procs: Sequence[subprocess.Popen[bytes]], *, timeout: float = 10.0) -> None:
    """Stop processes and all they started: SIGTERM to each group, SIGKILL after `timeout` s.

    Returns once each process is reaped; processes that already exited are only swept for
    anything they left running.
    """
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        # Whatever the process started and left behind in its group.
        _signal_group(proc, signal.SIGKILL)


def describe_exit(returncode: int) -> str:
    """How a process ended, for people: `exited with code 3`, `was killed by SIGKILL`."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
