"""The whole server as `make run` starts it, a real process tree that tests kill and signal.

`RunningLauncher` starts `python -m common.localstack.launcher` (or the real chain
`make run` → `uv run` → launcher) in its own session, with a private state directory and a free
gateway port, and finds its processes through /proc: the launcher's children by name, and
every process that still belongs to the stack (its state directory in the command line or
environment).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx

from common.localstack.embedded import free_port
from common.localstack.launcher import DATABASE
from common.localstack.registry import discover
from tests.e2e.api import ManagementApi
from tests.toolkit import child_pids, is_running, wait_until

__all__ = [
    "ADMIN",
    "READY",
    "REPO",
    "RunningLauncher",
    "cmdline",
    "environment",
    "ready_launcher",
]

REPO: Final = Path(__file__).parents[2]
ADMIN: Final = ("owner@example.com", "owner-password-1")
LOGIN: Final = "/api/management/v1/useradm/auth/login"
READY: Final = "Fleetport ready at "
# Starting the whole stack on a busy two-core machine can take a while.
START_TIMEOUT: Final = 180.0
# The launcher restarts a crashed child after half a second.
RESTARTED: Final = 10.0
# Starts tried when one loses a port to another process.
START_ATTEMPTS: Final = 3


def _read(path: Path) -> list[str]:
    """The NUL-separated entries of a /proc file (a command line or an environment)."""
    try:
        data = path.read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return data.split("\0")[:-1]


def cmdline(pid: int) -> list[str]:
    """A process's command line."""
    return _read(Path(f"/proc/{pid}/cmdline"))


def environment(pid: int) -> dict[str, str]:
    """The environment a process was started with."""
    pairs = (entry.partition("=") for entry in _read(Path(f"/proc/{pid}/environ")))
    return {name: value for name, _, value in pairs}


def _name(cmdline: list[str]) -> str | None:
    """The stack's name for a launcher child from its command line (`python -m <module>`)."""
    if len(cmdline) > 1 and cmdline[1].endswith("secantusd-py"):
        return DATABASE
    if len(cmdline) == 3 and cmdline[1] == "-m":
        return cmdline[2].removeprefix("services.")
    return None  # e.g. `python -m services.useradm create-user …` while the admin is created


def _uv() -> str:
    """The uv that `make run` uses: as make or uv pass it on, on PATH, or the Makefile's."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return found
    local = REPO / ".tools" / "bin" / "uv"
    assert local.exists(), "uv not found: run `make install` first (or set UV)"
    return str(local)


class RunningLauncher:
    """The launcher as a real process tree in a private state directory; `close()` kills all."""

    def __init__(
        self, workdir: Path, *, via_make: bool = False, env: Mapping[str, str] | None = None
    ) -> None:
        """Start it in `workdir`; `env` adds settings that every process it starts inherits."""
        self.state_dir = workdir / "state"
        self.console_path = workdir / "console.txt"
        self.port = free_port()
        self.via_make = via_make
        env = {
            **os.environ,
            "GATEWAY_PORT": str(self.port),
            "FLEETPORT_STATE_DIR": str(self.state_dir),
            "FLEETPORT_ADMIN_EMAIL": ADMIN[0],
            "FLEETPORT_ADMIN_PASSWORD": ADMIN[1],
            **(env or {}),
        }
        env.pop("MONGO_URL", None)
        argv = (
            ["make", "--no-print-directory", "run", f"UV={_uv()}"]
            if via_make
            else [sys.executable, "-m", "common.localstack.launcher"]
        )
        with self.console_path.open("wb") as console:
            # Its own session: a signal to its group is a Ctrl-C that spares pytest.
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def console(self) -> str:
        """Everything printed so far."""
        return self.console_path.read_text(errors="replace")

    def launcher_log(self) -> str:
        """The launcher's own log file."""
        return (self.state_dir / "logs" / "launcher.log").read_text()

    def wait_ready(self) -> None:
        """Wait for the ready line; fail with the console if the launcher exits first."""

        def ready() -> bool:
            assert self.proc.poll() is None, f"the launcher exited:\n{self.console()}"
            return READY + self.url in self.console()

        wait_until(ready, timeout=START_TIMEOUT, what="the stack ready", details=self.console)

    def launcher_pid(self) -> int:
        """The process id of the launcher process (a grandchild under make and uv)."""
        if not self.via_make:
            return self.proc.pid
        found = [
            pid
            for pid in self.stack_processes()
            if cmdline(pid)[1:3] == ["-m", "common.localstack.launcher"]
        ]
        assert len(found) == 1, f"launcher processes: {found}"
        return found[0]

    def children(self) -> dict[str, int]:
        """The launcher's live children by name: `database`, services, `gateway`."""
        named: dict[str, int] = {}
        for pid in child_pids(self.launcher_pid()):
            name = _name(cmdline(pid))
            if name is not None and is_running(pid):
                named[name] = pid
        return named

    def kill(self, name: str) -> int:
        """`kill -9` one child (`database`, a service, `gateway`); its process id."""
        pid = self.children()[name]
        os.kill(pid, signal.SIGKILL)
        return pid

    def restarted(self, name: str, old_pid: int, timeout: float = RESTARTED) -> int:
        """Wait for a new process in place of a killed one; its id."""

        def new_pid() -> int | None:
            pid = self.children().get(name)
            return pid if pid is not None and pid != old_pid else None

        return wait_until(new_pid, timeout=timeout, what=f"{name} restarted")

    def environment_of(self, name: str) -> dict[str, str]:
        """The environment a child was started with (its port, database, peers' addresses)."""
        return environment(self.children()[name])

    def stack_processes(self) -> dict[int, str]:
        """Every live process of this stack, with its command line.

        That is every process whose command line or environment names the state directory
        (all the launcher starts inherits `FLEETPORT_STATE_DIR`), or whose command line
        names the gateway port.
        """
        state, port = str(self.state_dir), str(self.port)
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            command = _read(entry / "cmdline")
            ours = port in command or any(
                state in item for item in (*command, *_read(entry / "environ"))
            )
            if ours and is_running(int(entry.name)):
                found[int(entry.name)] = " ".join(command)
        return found

    def wait_all_gone(self, timeout: float = 30.0) -> None:
        """Wait until no process of the stack is left; fail naming those that are."""
        wait_until(
            lambda: not self.stack_processes(),
            timeout=timeout,
            what="every process of the stack gone",
            details=lambda: f"{self.stack_processes()}\n{self.console()}",
        )

    def signal(self, signum: int, *, group: bool = False) -> None:
        """Send a signal to the top process, or to its whole process group (a Ctrl-C)."""
        if group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def login(self) -> httpx.Response:
        """Log in as the admin through the gateway."""
        return httpx.post(self.url + LOGIN, auth=ADMIN, timeout=30.0)

    def health_url(self, name: str) -> str:
        """A service's internal health endpoint, on the port in its process's environment."""
        svc = next(s for s in discover() if s.name == name)
        port = environment(self.children()[name])[f"{svc.env_prefix}LISTEN_PORT"]
        return f"http://127.0.0.1:{port}{svc.health_path}"

    def lost_a_port(self) -> bool:
        """Whether a process failed to start because its port was taken."""
        logs = self.state_dir / "logs"
        return any("address already in use" in log.read_text() for log in logs.glob("*.log"))

    def management_api(self) -> ManagementApi:
        """The management API as the admin (close it after use)."""
        login = self.login()
        assert login.status_code == 200, login.text
        return ManagementApi(self.url, login.text)

    def close(self) -> None:
        """Kill whatever is left, so that a failed test leaves nothing running."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in self.stack_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def ready_launcher(
    workdir: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[RunningLauncher]:
    """A launcher started in `workdir` and ready; everything it started is killed after.

    A start that lost a port is tried again: the launcher picks free ports, but another
    process on this shared machine may take one before the child binds it.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        attempt_dir = workdir / f"start-{attempt}"
        attempt_dir.mkdir(parents=True)
        launcher = RunningLauncher(attempt_dir, env=env)
        try:
            launcher.wait_ready()
        except AssertionError:
            launcher.close()
            if attempt == START_ATTEMPTS or not launcher.lost_a_port():
                raise
            continue
        break
    try:
        yield launcher
    finally:
        launcher.close()
