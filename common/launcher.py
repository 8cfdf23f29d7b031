"""Run the whole server on one machine: the embedded database, every service, the gateway.

`make run` calls `python -m common.launcher`. Services are started as child processes by
module name (`python -m services.<name>`), each on a free loopback port, and wired together
through environment variables; the gateway listens on `GATEWAY_PORT` (default 8080). All
state lives under `FLEETPORT_STATE_DIR` (default `./.fleetport`). `MONGO_URL` points every
service at an external MongoDB instead of the embedded server.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

from common.embedded import EmbeddedMongo, free_port
from common.keygen import ensure_keys

__all__ = ["SERVICES", "Service", "Stack", "admin_credentials", "built", "main"]


@dataclass(frozen=True, slots=True)
class Service:
    """A service the launcher knows how to start."""

    name: str
    env_prefix: str
    internal_name: str
    database: str
    # Peers whose internal address this service is given (`<PREFIX>_<PEER>_ADDR`).
    peers: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The module run with `python -m`."""
        return f"services.{self.name}"

    @property
    def health_path(self) -> str:
        """The internal health endpoint."""
        return f"/api/internal/v1/{self.internal_name}/health"


SERVICES: Final = (
    Service("useradm", "USERADM_", "useradm", "useradm"),
    Service(
        "deviceauth",
        "DEVICEAUTH_",
        "devauth",
        "deviceauth",
        ("inventory", "deployments", "deviceconnect", "deviceconfig"),
    ),
    Service("inventory", "INVENTORY_", "inventory", "inventory", ("devicemonitor",)),
    Service("deployments", "DEPLOYMENTS_", "deployments", "deployment_service", ("inventory",)),
    Service("deviceconfig", "DEVICECONFIG_", "deviceconfig", "deviceconfig", ("deployments",)),
    Service("deviceconnect", "DEVICECONNECT_", "deviceconnect", "deviceconnect", ("auditlogs",)),
    Service("auditlogs", "AUDITLOGS_", "auditlogs", "auditlogs"),
    Service("devicemonitor", "DEVICEMONITOR_", "devicemonitor", "devicemonitor", ("inventory",)),
)

DEV_ADMIN_EMAIL: Final = "admin@fleetport.local"
DEV_ADMIN_PASSWORD: Final = "fleetport-dev"


def built(service: Service) -> bool:
    """Whether the service's package exists in this checkout."""
    return (
        importlib.util.find_spec(service.module) is not None
        and importlib.util.find_spec(f"{service.module}.__main__") is not None
    )


@dataclass
class Stack:
    """The whole server as child processes; `start()` returns once everything is healthy."""

    state_dir: Path
    gateway_port: int = 8080
    mongo_url: str | None = None
    dev_mode: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[Service, ...] = field(
        default_factory=lambda: tuple(s for s in SERVICES if built(s))
    )
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

    def _prepare(self) -> dict[str, str]:
        for sub in ("keys", "logs", "artifacts"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        keys = ensure_keys(self.state_dir / "keys")
        return {
            "USERADM_SERVER_PRIV_KEY_PATH": str(keys.useradm),
            "DEVICEAUTH_SERVER_PRIV_KEY_PATH": str(keys.deviceauth),
            "DEPLOYMENTS_STORAGE_PATH": str(self.state_dir / "artifacts"),
            "DEPLOYMENTS_PRESIGN_SECRET": keys.presign_secret_value(),
        }

    def _spawn(self, name: str) -> None:
        module, env = self._commands[name]
        log = (self.logs / f"{name}.log").open("ab")
        self._procs[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _service_env(self, svc: Service, base_env: Mapping[str, str]) -> dict[str, str]:
        return {
            **base_env,
            f"{svc.env_prefix}MONGO_URL": self._mongo_url,
            f"{svc.env_prefix}MONGO_DB": svc.database,
            f"{svc.env_prefix}DEV_MODE": str(self.dev_mode).lower(),
            **{
                f"{svc.env_prefix}{peer.upper()}_ADDR": self.addrs[peer]
                for peer in svc.peers
                if peer in self.addrs
            },
            **self.extra_env,
        }

    def start(self, timeout: float = 90.0) -> None:
        """Start the database (unless external), the services and the gateway."""
        base_env = self._prepare()
        if self.mongo_url is None:
            self._db = EmbeddedMongo(self.state_dir / "db", log=self.logs / "database.log")
            self._db.start()
        ports = {s.name: free_port() for s in self.services}
        self.addrs = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for svc in self.services:
            env = self._service_env(svc, base_env)
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
            self._wait_healthy(list(self._commands), timeout)
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

    def _wait_healthy(self, names: list[str], timeout: float) -> None:
        checks = {name: self._health_url(name) for name in names}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while checks:
                for name, url in list(checks.items()):
                    proc = self._procs[name]
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"{name} exited with {proc.returncode}; see {self.logs / name}.log"
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
        proc = self._procs.pop(name)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_process(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped service again, on its old port, and wait until it is healthy."""
        self._spawn(name)
        self._wait_healthy([name], timeout)

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
        """Stop the gateway, the services and the database, in that order."""
        procs = list(self._procs.items())
        procs.sort(key=lambda item: item[0] != "gateway")
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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


def main() -> int:
    """Entry point of `make run`."""
    dev_mode = os.environ.get("FLEETPORT_DEV_MODE", "true").lower() in ("1", "true", "yes")
    stack = Stack(
        state_dir=Path(os.environ.get("FLEETPORT_STATE_DIR", ".fleetport")).resolve(),
        gateway_port=int(os.environ.get("GATEWAY_PORT", "8080")),
        mongo_url=os.environ.get("MONGO_URL") or None,
        dev_mode=dev_mode,
    )

    def request_stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    print(f"Starting Fleetport (state in {stack.state_dir}, logs in {stack.logs}) ...", flush=True)
    try:
        stack.start()
        credentials = admin_credentials(os.environ, dev_mode=dev_mode)
        if credentials is None:
            print(
                "No admin user created: set FLEETPORT_ADMIN_PASSWORD (and FLEETPORT_ADMIN_EMAIL)."
            )
        else:
            email, password = credentials
            result = stack.run_module(
                "useradm", "create-user", "--username", email, "--password", password
            )
            if result.returncode == 0:
                print(f"Created admin user {email} (password: {password})", flush=True)
            elif result.returncode == 3:
                print(f"Admin user {email} already exists", flush=True)
            else:
                print(f"Could not create the admin user: {result.stderr.strip()}", flush=True)
        print(f"Fleetport ready at {stack.url}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Stopping Fleetport ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"Fleetport failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second Ctrl-C or SIGTERM (uv and make pass signals on too) must not cut the
        # clean-up short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
