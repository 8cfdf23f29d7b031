"""Run the whole server on one machine: the embedded database, every service, the gateway.

`make run` calls `python -m common.localstack.launcher`. It starts every service that
declares itself in `services/<name>/service.py` (`common.localstack.registry`) as a child
process by module name (`python -m services.<name>`), each on a free loopback port, and wires
them together through environment variables: its database, the addresses of the peers it
names that run here, and the keys and directories it asks for. The gateway listens on
`GATEWAY_PORT` (default 8080). All state lives under `FLEETPORT_STATE_DIR` (default
`./.fleetport`). `MONGO_URL` points every service at an external MongoDB instead of the
embedded server.

The launcher supervises its children (`common.localstack.supervisor`): a crashed one is
restarted, the database before the services. SIGINT and SIGTERM, however many and in
whatever order, stop everything once; children started here die with the launcher even if it
is killed outright.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

import httpx

from common.core.servicespec import LocalResource, ServiceSpec
from common.localstack.embedded import EmbeddedMongo, free_ports
from common.localstack.keygen import ensure_keys
from common.localstack.processes import describe_exit, spawn, stop_all
from common.localstack.registry import discover
from common.localstack.supervisor import CrashLoop, Supervisor

__all__ = ["DATABASE", "Stack", "admin_credentials", "main"]

DEV_ADMIN_EMAIL: Final = "admin@fleetport.local"
DEV_ADMIN_PASSWORD: Final = "fleetport-dev"
# The embedded database's name among the stack's processes.
DATABASE: Final = "database"
# How often the launcher looks for exited children and stop signals.
_TICK: Final = 0.25

# Named, not __name__: `python -m common.localstack.launcher` runs this module as __main__.
_log = logging.getLogger("common.localstack.launcher")


def _never() -> bool:
    return False


@dataclass
class Stack:
    """The whole server as child processes; `start()` returns once everything is healthy.

    Nothing is restarted behind the caller's back: the launcher's loop hands the stack to a
    `Supervisor`, and a process stopped with `stop_process` is not watched until started.
    """

    state_dir: Path
    gateway_port: int = 8080
    mongo_url: str | None = None
    dev_mode: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[ServiceSpec, ...] = field(default_factory=discover)
    _db: EmbeddedMongo | None = None
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _commands: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    addrs: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def logs(self) -> Path:
        """Where each process writes its log (`<name>.log`)."""
        return self.state_dir / "logs"

    def _prepare(self) -> dict[LocalResource, str]:
        """Create the state directory, keys and secrets; what the services may ask for."""
        for sub in ("keys", "logs", "artifacts"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        keys = ensure_keys(self.state_dir / "keys")
        return {
            LocalResource.USER_TOKEN_KEY: str(keys.useradm),
            LocalResource.DEVICE_TOKEN_KEY: str(keys.deviceauth),
            LocalResource.DOWNLOAD_LINK_SECRET: keys.presign_secret_value(),
            LocalResource.CREDENTIALS_KEY: keys.iot_manager_key_value(),
            LocalResource.ARTIFACTS_DIR: str(self.state_dir / "artifacts"),
        }

    def _spawn(self, name: str) -> int:
        module, env = self._commands[name]
        proc = spawn(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            log=self.logs / f"{name}.log",
        )
        self._procs[name] = proc
        return proc.pid

    def _service_env(self, svc: ServiceSpec, local: Mapping[LocalResource, str]) -> dict[str, str]:
        prefix = svc.env_prefix
        return {
            f"{prefix}MONGO_URL": self._mongo_url,
            f"{prefix}MONGO_DB": svc.database,
            f"{prefix}DEV_MODE": str(self.dev_mode).lower(),
            **{f"{prefix}{name}": local[resource] for name, resource in svc.local_env.items()},
            # A peer that is not built here is simply not given: the service runs without it.
            **{
                f"{prefix}{peer.upper()}_ADDR": self.addrs[peer]
                for peer in svc.peers
                if peer in self.addrs
            },
            **self.extra_env,
        }

    def start(self, timeout: float = 90.0, *, cancelled: Callable[[], bool] = _never) -> None:
        """Start the database (unless external), the services and the gateway.

        Returns early, with whatever has started still running, once `cancelled()` is true.
        """
        local = self._prepare()
        if self.mongo_url is None:
            self._db = EmbeddedMongo(self.state_dir / "db", log=self.logs / "database.log")
            self._db.start()
        chosen = (p for p in free_ports(len(self.services) + 1) if p != self.gateway_port)
        ports = {s.name: next(chosen) for s in self.services}
        self.addrs = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for svc in self.services:
            env = self._service_env(svc, local)
            env[f"{svc.env_prefix}LISTEN_PORT"] = str(ports[svc.name])
            self._commands[svc.name] = (svc.module, env)
        self._commands["gateway"] = (
            "gateway",
            {
                "GATEWAY_LISTEN_PORT": str(self.gateway_port),
                "GATEWAY_DEV_MODE": str(self.dev_mode).lower(),
                **{f"GATEWAY_{name.upper()}_ADDR": addr for name, addr in self.addrs.items()},
                **self.extra_env,
            },
        )
        try:
            for name in self._commands:
                self._spawn(name)
            self._wait_healthy(list(self._commands), timeout, cancelled=cancelled)
        except BaseException:
            self.stop()
            raise

    @property
    def _mongo_url(self) -> str:
        if self.mongo_url is not None:
            return self.mongo_url
        assert self._db is not None, "the stack is not started"
        return self._db.url

    def _health_url(self, name: str) -> str:
        if name == "gateway":
            return f"{self.url}/status"
        svc = next(s for s in self.services if s.name == name)
        return self.addrs[name] + svc.health_path

    def _wait_healthy(
        self, names: list[str], timeout: float, *, cancelled: Callable[[], bool] = _never
    ) -> None:
        checks = {name: self._health_url(name) for name in names}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while checks and not cancelled():
                for name, url in list(checks.items()):
                    proc = self._procs[name]
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"{name} {describe_exit(proc.returncode)}; see {self.logs / name}.log"
                        )
                    try:
                        if client.get(url).status_code == 204:
                            del checks[name]
                    except httpx.TransportError:
                        pass
                if checks and time.monotonic() > deadline:
                    raise RuntimeError(f"not healthy in time: {', '.join(sorted(checks))}")
                if checks:
                    time.sleep(0.2)

    def stop_process(self, name: str) -> None:
        """Stop one service (or the gateway) of a running stack, e.g. to test an outage."""
        stop_all([self._procs.pop(name)])

    def start_process(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped service again, on its old port, and wait until it is healthy."""
        self._spawn(name)
        self._wait_healthy([name], timeout)

    def pids(self) -> dict[str, int]:
        """The process id of every child by name, the embedded database as `DATABASE`."""
        pids = {name: proc.pid for name, proc in self._procs.items()}
        if self._db is not None and self._db.pid is not None:
            pids = {DATABASE: self._db.pid, **pids}
        return pids

    def down(self) -> dict[str, int]:
        """Children that exited on their own (now reaped) and their exit status, in start order."""
        down: dict[str, int] = {}
        if self._db is not None and (status := self._db.returncode) is not None:
            down[DATABASE] = status
        for name, proc in self._procs.items():
            if (status := proc.poll()) is not None:
                down[name] = status
        return down

    def restart(self, name: str) -> int:
        """Start an exited child again on its old port (the database on its old storage)."""
        if name == DATABASE:
            assert self._db is not None, "no embedded database"
            self._db.stop()  # sweeps anything the exited server left behind
            self._db.start()
            return self.pids()[DATABASE]
        stop_all([self._procs[name]])
        return self._spawn(name)

    def run_module(self, service: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a service's command line (e.g. useradm create-user) against this stack."""
        svc = next(s for s in self.services if s.name == service)
        return subprocess.run(
            [sys.executable, "-m", svc.module, *args],
            env={**os.environ, **self._service_env(svc, self._prepare())},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        """Stop the gateway, then the services, then the database, and all they started."""
        gateway = self._procs.pop("gateway", None)
        if gateway is not None:
            stop_all([gateway])
        stop_all(list(self._procs.values()))
        self._procs.clear()
        if self._db is not None:
            self._db.stop()
            self._db = None


def admin_credentials(environ: Mapping[str, str], *, dev_mode: bool) -> tuple[str, str] | None:
    """The first admin's email and password; no default password outside development."""
    email = environ.get("FLEETPORT_ADMIN_EMAIL", DEV_ADMIN_EMAIL)
    password = environ.get("FLEETPORT_ADMIN_PASSWORD")
    if password:
        return email, password
    if dev_mode:
        return email, DEV_ADMIN_PASSWORD
    return None


class _StopSignals:
    """Records SIGINT and SIGTERM instead of raising: the launcher stops once, at its pace."""

    def __init__(self) -> None:
        self.received: int | None = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._record)

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def __call__(self) -> bool:
        """Whether a stop was requested."""
        return self.received is not None


def _configure_logging(log_file: Path) -> None:
    """The launcher's messages: plain lines on the console, with timestamps in `log_file`."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    file = logging.FileHandler(log_file)
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("common.localstack")
    logger.handlers[:] = [console, file]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _create_admin(stack: Stack, *, dev_mode: bool) -> None:
    credentials = admin_credentials(os.environ, dev_mode=dev_mode)
    if credentials is None:
        print(
            "No admin user created: set FLEETPORT_ADMIN_PASSWORD (and FLEETPORT_ADMIN_EMAIL).",
            flush=True,
        )
        return
    email, password = credentials
    result = stack.run_module("useradm", "create-user", "--username", email, "--password", password)
    if result.returncode == 0:
        print(f"Created admin user {email} (password: {password})", flush=True)
    elif result.returncode == 3:
        print(f"Admin user {email} already exists", flush=True)
    else:
        print(f"Could not create the admin user: {result.stderr.strip()}", flush=True)


def _run(stack: Stack, stop_requested: _StopSignals, *, dev_mode: bool) -> int:
    """Start the stack and supervise it until a stop signal; the exit status of `make run`."""
    try:
        stack.start(cancelled=stop_requested)
    except RuntimeError as exc:
        _log.error("Fleetport failed to start: %s", exc)
        return 1
    if not stop_requested():
        _create_admin(stack, dev_mode=dev_mode)
        _log.info("Fleetport ready at %s", stack.url)
    supervisor = Supervisor(stack, first=DATABASE)
    try:
        while not stop_requested():
            supervisor.check()
            time.sleep(_TICK)
    except CrashLoop as exc:
        _log.error("%s (see %s); stopping Fleetport", exc, stack.logs / f"{exc.name}.log")
        return 1
    _log.info("Stopping Fleetport ...")
    return 0


def main() -> int:
    """Entry point of `make run`: start everything, keep it running, stop it on a signal."""
    # First of all: from here on a signal is a request to stop cleanly, never an exception.
    stop_requested = _StopSignals()
    dev_mode = os.environ.get("FLEETPORT_DEV_MODE", "true").lower() in ("1", "true", "yes")
    stack = Stack(
        state_dir=Path(os.environ.get("FLEETPORT_STATE_DIR", ".fleetport")).resolve(),
        gateway_port=int(os.environ.get("GATEWAY_PORT", "8080")),
        mongo_url=os.environ.get("MONGO_URL") or None,
        dev_mode=dev_mode,
    )
    stack.logs.mkdir(parents=True, exist_ok=True)
    _configure_logging(stack.logs / "launcher.log")
    _log.info("Starting Fleetport (state in %s, logs in %s) ...", stack.state_dir, stack.logs)
    try:
        return _run(stack, stop_requested, dev_mode=dev_mode)
    finally:
        stack.stop()
        _log.info("Fleetport stopped")


if __name__ == "__main__":
    sys.exit(main())
