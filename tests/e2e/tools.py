"""Drive the real Mender tools (Debian packages) from end-to-end tests.

`MenderDevice` runs `/usr/bin/mender daemon` (and optionally `mender-connect`) in a sandbox
directory; `MenderCli` wraps `mender-cli`; `make_module_artifact` / `make_script_artifact` /
`read_artifact` wrap `mender-artifact`. `generate_device_key` makes keys the client accepts.

Facts about the tools this module relies on (mender-client 3.4, mender-connect 2.1,
mender-cli 1.9, mender-artifact 3.9, the Debian packages):

- The identity, inventory and update-module directories (`/usr/share/mender/...`) and
  `/etc/mender/artifact_info` are fixed paths. Each client process therefore runs in its own
  mount namespace (`unshare -m`, private propagation) with the sandbox bind-mounted over
  `/usr/share/mender` and `/etc/mender`. `unshare` without `--fork` execs, so the PID of the
  launched process is the PID of `mender` itself (needed for SIGUSR1/SIGUSR2).
- `--data` must be absolute; the device key lives at `DATA/mender-agent.pem` (PKCS#1 RSA 3072
  when the client generates it; pre-placed SEC1 ECDSA P-256 and PKCS#8 Ed25519 keys work).
- `mender check-update` / `send-inventory` find the daemon through
  `systemctl show -p MainPID mender-client`; the sandbox ships a fake `systemctl` that
  prints the daemon's PID, and a `mender` wrapper adding `--config`/`--data`, so
  mender-connect's "mender client" protocol works too.
- The daemon runs `reboot` from PATH when a module answers `NeedsArtifactReboot` with
  `Automatic`, reports `rebooting` and waits. The sandbox's fake `reboot` only records the
  call; `MenderDevice.restart()` then plays the reboot: the daemon resumes with
  ArtifactVerifyReboot, ArtifactCommit and reports `installing`, `success`.
- One-shot commands (`bootstrap`, `show-artifact`, …) read a copy of the config with D-Bus
  disabled: with the bus, `bootstrap` would announce its own token and its short-lived local
  proxy to mender-connect.
- The daemon's first log line of interest at start is "State transition: init [none]";
  "Running Mender client version" is only logged when a deployment starts.
- mender-connect refuses to start without D-Bus; it reads the server URL (the client's local
  proxy) from `io.mender.AuthenticationManager`, served by `mender daemon`. Each device gets a
  private `dbus-daemon` whose socket both processes use as `DBUS_SYSTEM_BUS_ADDRESS`.
- A unix socket path is limited to 107 bytes; when the sandbox path is too long the bus socket
  is placed in a short temporary directory instead.
- `mender-cli` 1.9 prints "Configuration file not found. Continuing." on *stdout* unless a
  `.mender-clirc` exists in `/etc/mender-cli/`, `$HOME` or the working directory; with one it
  prints "Using configuration file: …" on stderr instead. `MenderCli` writes one (holding just
  the server URL) into its own HOME, which is also its working directory, so stdout carries
  only the command's output. `devices list --raw` prints the server's JSON on *stderr*.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "MenderCli",
    "MenderDevice",
    "ToolError",
    "generate_device_key",
    "make_module_artifact",
    "make_script_artifact",
    "read_artifact",
]

MENDER: Final = "/usr/bin/mender"
MENDER_CONNECT: Final = "/usr/bin/mender-connect"
MENDER_CLI: Final = "/usr/bin/mender-cli"
MENDER_ARTIFACT: Final = "/usr/bin/mender-artifact"
DBUS_DAEMON: Final = "/usr/bin/dbus-daemon"
SYSTEM_MODULES: Final = Path("/usr/share/mender/modules/v3")

_COMMAND_TIMEOUT: Final = 60.0
_STOP_TIMEOUT: Final = 10.0
_LOG_TAIL_CHARS: Final = 4000
_MAX_SOCKET_PATH: Final = 100
_CLI_CONFIG_NOTE: Final = "Using configuration file:"
_SINGLE_FILE_META: Final = frozenset({"dest_dir", "filename", "permissions"})

KeyKind = Literal["rsa", "ecdsa", "ed25519"]


class ToolError(RuntimeError):
    """A Mender tool failed, timed out or exited unexpectedly; the message carries its output."""

    def __init__(
        self, message: str, *, cmd: Sequence[str] = (), stdout: str = "", stderr: str = ""
    ) -> None:
        detail = [message]
        if cmd:
            detail.append(f"command: {shlex.join(cmd)}")
        if stdout:
            detail.append(f"--- stdout ---\n{stdout.rstrip()}")
        if stderr:
            detail.append(f"--- stderr ---\n{stderr.rstrip()}")
        super().__init__("\n".join(detail))
        self.cmd = list(cmd)
        self.stdout = stdout
        self.stderr = stderr


def _run(
    cmd: Sequence[str],
    *,
    timeout: float = _COMMAND_TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; raise `ToolError` with its output on failure."""
    try:
        result = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(
            f"timed out after {timeout:g} s",
            cmd=cmd,
            stdout=_text(exc.stdout),
            stderr=_text(exc.stderr),
        ) from exc
    if check and result.returncode != 0:
        raise ToolError(
            f"exit status {result.returncode}", cmd=cmd, stdout=result.stdout, stderr=result.stderr
        )
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def _write(path: Path, content: str | bytes, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(mode)


def _tail(text: str) -> str:
    return text[-_LOG_TAIL_CHARS:]


# --- process bookkeeping ---------------------------------------------------------------------


@dataclass(frozen=True)
class _ProcInfo:
    state: str
    ppid: int
    pgid: int
    sid: int
    start: int


def _proc_table() -> dict[int, _ProcInfo]:
    """Parent, group, session and start time of every process, from /proc."""
    table: dict[int, _ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = raw[raw.rfind(")") + 2 :].split()
        table[int(entry)] = _ProcInfo(
            state=fields[0],
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            sid=int(fields[3]),
            start=int(fields[19]),
        )
    return table


def _descendants(root: int, table: Mapping[int, _ProcInfo]) -> list[list[tuple[int, int]]]:
    """(pid, start time) of the live processes below `root`, one list per generation."""
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        if info.state != "Z":
            children.setdefault(info.ppid, []).append(pid)
    generations: list[list[tuple[int, int]]] = []
    parents = [root]
    while parents:
        level = [child for parent in parents for child in children.get(parent, [])]
        if level:
            generations.append([(pid, table[pid].start) for pid in level])
        parents = level
    return generations


@dataclass
class _Managed:
    """A launched process plus what is needed to take it and everything it spawned down."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, *, grace: float = _STOP_TIMEOUT) -> None:
        leader = self.popen.pid
        tracked: set[tuple[int, int]] = set()
        if self.popen.poll() is None:
            # Like systemd's KillMode=control-group: SIGTERM to the whole tree at once
            # (module and inventory scripts, remote shells, which leave the session).
            generations = _descendants(leader, _proc_table())
            tracked = {entry for level in generations for entry in level}
            for pid, _ in tracked:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout=grace)
        # Then SIGKILL whatever is left in the leader's session or group or was below it.
        # (Orphans go to PID 1, which reaps their zombies, if lazily on some machines.)
        deadline = time.monotonic() + grace
        while True:
            table = _proc_table()
            leftovers = [
                pid
                for pid, info in table.items()
                if info.state != "Z"
                and (info.sid == leader or info.pgid == leader or (pid, info.start) in tracked)
            ]
            if not leftovers:
                return
            if time.monotonic() > deadline:
                raise ToolError(f"{self.name}: processes survived SIGKILL: {leftovers}")
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


@dataclass
class _Processes:
    """The processes of one device, stopped in reverse start order; also run as a finalizer."""

    running: dict[str, _Managed] = field(default_factory=dict)
    temp_dirs: list[Path] = field(default_factory=list)

    def stop(self, name: str) -> None:
        managed = self.running.pop(name, None)
        if managed is not None:
            managed.stop()

    def stop_all(self) -> None:
        errors: list[ToolError] = []
        for name in reversed(list(self.running)):
            try:
                self.stop(name)
            except ToolError as exc:
                errors.append(exc)
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.temp_dirs.clear()
        if errors:
            raise errors[0]


# --- keys --------------------------------------------------------------------------------------


def generate_device_key(kind: KeyKind = "ecdsa") -> bytes:
    """A private key PEM the client reads: PKCS#1 RSA 3072, SEC1 P-256 or PKCS#8 Ed25519."""
    if kind == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        return rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if kind == "ecdsa":
        ec_key = ec.generate_private_key(ec.SECP256R1())
        return ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return ed_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(private_pem: bytes) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# --- the device --------------------------------------------------------------------------------


class MenderDevice:
    """A real `mender daemon` (and optionally `mender-connect`) sandboxed under `root`."""

    def __init__(
        self,
        root: Path,
        server_url: str,
        *,
        identity: Mapping[str, str],
        device_type: str = "test-device",
        artifact_name: str = "initial-release",
        key: bytes | None = None,
        poll_seconds: int = 2,
        tenant_token: str = "",
        inventory: Mapping[str, str | Sequence[str]] | None = None,
        inventory_scripts: Mapping[str, str] | None = None,
        modules: Mapping[str, str | Path] | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        """Describe the device; nothing is written or started before `start()`."""
        if not identity:
            raise ValueError("the client cannot authenticate without identity attributes")
        for name, value in identity.items():
            _check_attribute(name, value)
        for name, values in (inventory or {}).items():
            for value in [values] if isinstance(values, str) else values:
                _check_attribute(name, value)
        self.root = Path(root).resolve()
        self.server_url = server_url
        self.identity = dict(identity)
        self.device_type = device_type
        self.artifact_name = artifact_name
        self.poll_seconds = poll_seconds
        self.tenant_token = tenant_token
        self._key = key
        self._inventory = dict(inventory or {})
        self._inventory_scripts = dict(inventory_scripts or {})
        self._modules = dict(modules or {})
        self._extra_config = dict(extra_config or {})
        self._procs = _Processes()
        self._finalizer = weakref.finalize(self, self._procs.stop_all)
        self._bus_socket: Path | None = None

    # Paths of the sandbox.

    @property
    def data_dir(self) -> Path:
        """The client's `--data` directory (key, LMDB store, module work dirs)."""
        return self.root / "data"

    @property
    def config_path(self) -> Path:
        """The client's `--config` file."""
        return self.root / "mender.conf"

    @property
    def key_path(self) -> Path:
        """Where the client keeps (or generates) its private key."""
        return self.data_dir / "mender-agent.pem"

    @property
    def log_path(self) -> Path:
        """stdout and stderr of `mender daemon` (appended across restarts)."""
        return self.root / "mender.log"

    @property
    def connect_log_path(self) -> Path:
        """stdout and stderr of `mender-connect`."""
        return self.root / "mender-connect.log"

    @property
    def reboot_log_path(self) -> Path:
        """One line per `reboot` the client ran; `restart()` then plays the reboot."""
        return self.root / "reboot.log"

    @property
    def pid(self) -> int:
        """PID of the running `mender` process."""
        managed = self._procs.running.get("mender")
        if managed is None:
            raise RuntimeError("the mender daemon is not running")
        return managed.popen.pid

    @property
    def running(self) -> bool:
        """Whether the daemon process is alive."""
        managed = self._procs.running.get("mender")
        return managed is not None and managed.popen.poll() is None

    # Life cycle.

    def start(self) -> None:
        """Lay out the sandbox, start its private D-Bus and launch `mender daemon`."""
        if self.running:
            raise RuntimeError("already started")
        self.stop()  # a daemon that died on its own leaves its bus and helpers behind
        try:
            self._layout()
            self._start_bus()
            since = len(self.log_text())
            self._launch(
                "mender",
                [*self._client_argv(), "-l", "debug", "daemon"],
                self.log_path,
            )
            (self.root / "mender.pid").write_text(f"{self.pid}\n")
            self.wait_for_log(r"State transition: init \[none\]", timeout=15.0, since=since)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop mender-connect, the daemon and the bus; idempotent, leaves no process behind."""
        try:
            self._procs.stop_all()
        finally:
            self._bus_socket = None
            with contextlib.suppress(FileNotFoundError):
                (self.root / "mender.pid").unlink()

    def restart(self) -> None:
        """Stop and start again, keeping the data directory (key, store, installed artifact)."""
        self.stop()
        self.start()

    def __enter__(self) -> MenderDevice:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Nudging the daemon.

    def check_update(self) -> None:
        """Make the daemon poll for a deployment now (SIGUSR1)."""
        os.kill(self.pid, signal.SIGUSR1)

    def send_inventory(self) -> None:
        """Make the daemon send its inventory now (SIGUSR2)."""
        os.kill(self.pid, signal.SIGUSR2)

    # Observing it.

    def public_key_pem(self, timeout: float = 30.0) -> str:
        """The SubjectPublicKeyInfo PEM of the device key, waiting for the client to create it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return _public_pem(self.key_path.read_bytes())
            except (FileNotFoundError, ValueError):
                # Not generated yet, or caught half-written.
                if time.monotonic() > deadline:
                    raise ToolError(
                        f"no usable key at {self.key_path} after {timeout:g} s",
                        stdout=_tail(self.log_text()),
                    ) from None
            time.sleep(0.1)

    def log_text(self) -> str:
        """Everything the daemon logged so far."""
        return _read_log(self.log_path)

    def connect_log_text(self) -> str:
        """Everything mender-connect logged so far."""
        return _read_log(self.connect_log_path)

    def wait_for_log(self, pattern: str, timeout: float = 30.0, *, since: int = 0) -> None:
        """Wait for a regex in the daemon log (after offset `since` of `log_text()`)."""
        _wait_for_log(
            self.log_path, pattern, timeout, since, self._procs.running.get("mender"), "mender"
        )

    def wait_for_connect_log(self, pattern: str, timeout: float = 30.0, *, since: int = 0) -> None:
        """Wait for a regex in the mender-connect log (after offset `since`)."""
        _wait_for_log(
            self.connect_log_path,
            pattern,
            timeout,
            since,
            self._procs.running.get("mender-connect"),
            "mender-connect",
        )

    # One-shot client commands (run in the same sandbox, beside the daemon if it runs).

    def client(
        self, *args: str, check: bool = True, timeout: float = _COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run `mender ARGS` on the sandbox's data directory (with D-Bus disabled)."""
        if not (self.root / "run.sh").exists():
            self._layout()
        return _run(
            [*self._client_argv(oneshot=True), *args], timeout=timeout, check=check, env=self._env()
        )

    def show_artifact(self) -> str:
        """The installed artifact name (`mender show-artifact`)."""
        return self.client("show-artifact").stdout.strip()

    def show_provides(self) -> dict[str, str]:
        """The installed provides (`mender show-provides`)."""
        lines = self.client("show-provides").stdout.splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def bootstrap(self, timeout: float = _COMMAND_TIMEOUT) -> bool:
        """One authentication round (`mender bootstrap`): True when the server issued a token."""
        return self.client("bootstrap", check=False, timeout=timeout).returncode == 0

    # mender-connect.

    def start_connect(
        self, *, shell: str = "/bin/bash", extra_config: Mapping[str, Any] | None = None
    ) -> None:
        """Launch `mender-connect` on the device's private bus (the daemon must be running)."""
        if not self.running:
            raise RuntimeError("start the mender daemon before mender-connect")
        if "mender-connect" in self._procs.running:
            raise RuntimeError("mender-connect already started")
        config: dict[str, Any] = {
            "ShellCommand": shell,
            "User": "root",
            "Terminal": {"Width": 80, "Height": 24},
            "ReconnectIntervalSeconds": 5,
            **(extra_config or {}),
        }
        conf = self.root / "mender-connect.conf"
        _write(conf, json.dumps(config, indent=2) + "\n")
        self._launch(
            "mender-connect",
            [
                str(self.root / "run.sh"),
                MENDER_CONNECT,
                "--config",
                str(conf),
                "--fallback-config",
                str(self.root / "mender-connect-fallback.conf"),
                "--debug",
                "daemon",
            ],
            self.connect_log_path,
        )

    def stop_connect(self) -> None:
        """Stop `mender-connect` (and any shell it started); idempotent."""
        self._procs.stop("mender-connect")

    # Internals.

    @property
    def _oneshot_config_path(self) -> Path:
        return self.root / "mender-oneshot.conf"

    def _client_argv(self, *, oneshot: bool = False) -> list[str]:
        return [
            str(self.root / "run.sh"),
            MENDER,
            "--config",
            str(self._oneshot_config_path if oneshot else self.config_path),
            "--fallback-config",
            str(self.root / "mender-fallback.conf"),
            "--data",
            str(self.data_dir),
            "--no-syslog",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        env["PATH"] = (
            f"{self.root / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        )
        if self._bus_socket is not None:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={self._bus_socket}"
        return env

    def _layout(self) -> None:
        sb = self.root
        sb.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self._key is not None and not self.key_path.exists():
            _write(self.key_path, self._key, mode=0o600)
        _write(self.data_dir / "device_type", f"device_type={self.device_type}\n")
        _write(sb / "etc" / "artifact_info", f"artifact_name={self.artifact_name}\n")

        config: dict[str, Any] = {
            "ServerURL": self.server_url,
            "TenantToken": self.tenant_token,
            "UpdatePollIntervalSeconds": self.poll_seconds,
            "InventoryPollIntervalSeconds": self.poll_seconds,
            "RetryPollIntervalSeconds": self.poll_seconds,
            "DBus": {"Enabled": True},
            **self._extra_config,
        }
        _write(self.config_path, json.dumps(config, indent=2) + "\n")
        # One-shot commands stay off the bus: `bootstrap` would otherwise announce its own
        # token and short-lived proxy to mender-connect.
        oneshot = {**config, "DBus": {"Enabled": False}}
        _write(self._oneshot_config_path, json.dumps(oneshot, indent=2) + "\n")

        share = sb / "share"
        identity_lines = [f"{k}={v}" for k, v in sorted(self.identity.items())]
        _write(
            share / "identity" / "mender-device-identity",
            _shell_script(f"printf '%s\\n' {shlex.join(identity_lines)}"),
            mode=0o755,
        )
        inventory_dir = share / "inventory"
        if inventory_dir.exists():
            shutil.rmtree(inventory_dir)
        inventory_dir.mkdir(parents=True)
        if self._inventory:
            lines = [
                f"{name}={value}"
                for name, values in self._inventory.items()
                for value in ([values] if isinstance(values, str) else values)
            ]
            _write(
                inventory_dir / "mender-inventory-fleetport",
                _shell_script(f"printf '%s\\n' {shlex.join(lines)}"),
                mode=0o755,
            )
        for name, text in self._inventory_scripts.items():
            filename = name if name.startswith("mender-inventory-") else f"mender-inventory-{name}"
            _write(inventory_dir / filename, text, mode=0o755)

        modules_dir = share / "modules" / "v3"
        modules_dir.mkdir(parents=True, exist_ok=True)
        for module in SYSTEM_MODULES.iterdir():
            shutil.copy2(module, modules_dir / module.name)
        for name, source in self._modules.items():
            if isinstance(source, Path):
                shutil.copy2(source, modules_dir / name)
                (modules_dir / name).chmod(0o755)
            else:
                _write(modules_dir / name, source, mode=0o755)

        run_sh = (
            "# usage: run.sh COMMAND... - runs COMMAND with this sandbox mounted over\n"
            "# /usr/share/mender and /etc/mender in a private mount namespace.\n"
            'exec unshare -m sh -c \'mount --bind "$0/share" /usr/share/mender &&\n'
            '                       mount --bind "$0/etc" /etc/mender &&\n'
            f'                       exec "$@"\' {shlex.quote(str(sb))} "$@"'
        )
        _write(sb / "run.sh", _shell_script(run_sh), mode=0o755)
        bin_dir = sb / "bin"
        mender_wrapper = (
            f"exec {shlex.quote(str(sb / 'run.sh'))} {MENDER}"
            f" --config {shlex.quote(str(self._oneshot_config_path))}"
            f" --fallback-config {shlex.quote(str(sb / 'mender-fallback.conf'))}"
            f' --data {shlex.quote(str(self.data_dir))} --no-syslog "$@"'
        )
        _write(bin_dir / "mender", _shell_script(mender_wrapper), mode=0o755)
        pid_file = shlex.quote(str(sb / "mender.pid"))
        systemctl = (
            "# Only `systemctl show -p MainPID mender-client` matters (mender check-update).\n"
            'case "$*" in\n'
            f'  *MainPID*) echo "MainPID=$(cat {pid_file} 2>/dev/null || echo 0)" ;;\n'
            "esac\n"
            "exit 0"
        )
        _write(bin_dir / "systemctl", _shell_script(systemctl), mode=0o755)
        reboot = (
            f'echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $0 $*" >> '
            f"{shlex.quote(str(self.reboot_log_path))}\nexit 0"
        )
        _write(bin_dir / "reboot", _shell_script(reboot), mode=0o755)

    def _start_bus(self) -> None:
        socket = self.root / "dbus.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            short = Path(tempfile.mkdtemp(prefix="fp-dbus-", dir="/tmp"))
            self._procs.temp_dirs.append(short)
            socket = short / "dbus.sock"
        socket.unlink(missing_ok=True)
        conf = self.root / "dbus.conf"
        _write(
            conf,
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            "<busconfig>\n"
            "  <type>system</type>\n"
            f"  <listen>unix:path={socket}</listen>\n"
            "  <auth>EXTERNAL</auth>\n"
            '  <policy context="default">\n'
            '    <allow user="*"/>\n'
            '    <allow own="*"/>\n'
            '    <allow send_destination="*" eavesdrop="true"/>\n'
            '    <allow eavesdrop="true"/>\n'
            "  </policy>\n"
            "</busconfig>\n",
        )
        bus = self._launch(
            "dbus-daemon",
            [DBUS_DAEMON, f"--config-file={conf}", "--nofork", "--nopidfile"],
            self.root / "dbus.log",
        )
        deadline = time.monotonic() + 10.0
        while not socket.exists():
            if bus.popen.poll() is not None or time.monotonic() > deadline:
                raise ToolError("dbus-daemon did not come up", stdout=_read_log(bus.log))
            time.sleep(0.02)
        self._bus_socket = socket

    def _launch(self, name: str, argv: list[str], log: Path) -> _Managed:
        with log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.root,
                start_new_session=True,
            )
        managed = _Managed(name=name, popen=popen, log=log)
        self._procs.running[name] = managed
        return managed


def _check_attribute(name: str, value: str) -> None:
    if not name or "=" in name or "\n" in name or "\n" in value:
        raise ValueError(f"not usable as a key=value line: {name!r}={value!r}")


def _shell_script(body: str) -> str:
    return f"#!/bin/sh\n{body}\n"


def _read_log(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _wait_for_log(
    path: Path, pattern: str, timeout: float, since: int, proc: _Managed | None, name: str
) -> None:
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        text = _read_log(path)
        if regex.search(text, since):
            return
        if proc is None or proc.popen.poll() is not None:
            status = "not running" if proc is None else f"exited with {proc.popen.returncode}"
            # One last look: the line may have been written just before the exit.
            if regex.search(_read_log(path), since):
                return
            raise ToolError(f"{name} {status} before logging {pattern!r}", stdout=_tail(text))
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{name} did not log {pattern!r} within {timeout:g} s; log tail:\n{_tail(text)}"
            )
        time.sleep(0.1)


# --- mender-cli --------------------------------------------------------------------------------


class MenderCli:
    """The real `mender-cli` with its own HOME and token cache under `root`."""

    def __init__(self, root: Path, server_url: str, *, timeout: float = _COMMAND_TIMEOUT) -> None:
        """Use `root` (created if missing) for HOME, XDG_CACHE_HOME and the working directory."""
        self.root = Path(root).resolve()
        self.server_url = server_url
        self.timeout = timeout

    @property
    def token_path(self) -> Path:
        """Where `login` stores the user JWT."""
        return self.root / "cache" / "mender" / "authtoken"

    def token(self) -> str:
        """The user JWT saved by the last `login`."""
        return self.token_path.read_text().strip()

    def command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of `mender-cli --server URL ARGS` (for long-running use)."""
        (self.root / "cache").mkdir(parents=True, exist_ok=True)
        _write(self.root / ".mender-clirc", json.dumps({"server": self.server_url}) + "\n")
        env = dict(os.environ)
        env["HOME"] = str(self.root)
        env["XDG_CACHE_HOME"] = str(self.root / "cache")
        return [MENDER_CLI, "--server", self.server_url, *args], env

    def run(
        self, *args: str, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `mender-cli --server URL ARGS` in `root`; raise `ToolError` on a non-zero exit."""
        argv, env = self.command(*args)
        return _run(
            argv,
            timeout=self.timeout if timeout is None else timeout,
            check=check,
            env=env,
            cwd=self.root,
        )

    def login(self, username: str, password: str) -> None:
        """Log in and keep the token for the following commands."""
        self.run("login", "--username", username, "--password", password)

    def devices_list(self, *, detail: int | None = None) -> str:
        """`devices list` output."""
        args = ["devices", "list"]
        if detail is not None:
            args += ["--detail", str(detail)]
        return self.run(*args).stdout

    def devices_json(self) -> Any:
        """The server's answer as `devices list --raw` shows it, parsed."""
        stderr = self.run("devices", "list", "--raw").stderr
        lines = [line for line in stderr.splitlines() if not line.startswith(_CLI_CONFIG_NOTE)]
        return json.loads("\n".join(lines))

    def artifacts_list(self, *, detail: int | None = None) -> str:
        """`artifacts list` output."""
        args = ["artifacts", "list"]
        if detail is not None:
            args += ["--detail", str(detail)]
        return self.run(*args).stdout

    def artifacts_upload(self, path: Path, description: str = "") -> str:
        """Upload an artifact file; returns the tool's output ("upload successful")."""
        return self.run(
            "artifacts",
            "upload",
            "--no-progress",
            "--description",
            description,
            str(Path(path).resolve()),
        ).stdout

    def artifacts_delete(self, artifact_id: str) -> str:
        """Delete an artifact by id; returns the tool's output."""
        return self.run("artifacts", "delete", artifact_id).stdout


# --- mender-artifact ---------------------------------------------------------------------------


def make_module_artifact(
    out: Path,
    *,
    name: str,
    device_type: str | Sequence[str],
    files: Sequence[Path],
    module: str = "single-file",
    dest_dir: str | None = None,
    permissions: str | None = None,
    provides: Mapping[str, str] | None = None,
    depends: Mapping[str, str] | None = None,
    meta_data: Mapping[str, Any] | None = None,
    software_name: str | None = None,
    software_version: str | None = None,
    compression: Literal["none", "gzip", "lzma"] | None = None,
    signing_key: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """Write a module-image artifact; for `single-file` add its dest_dir/filename/permissions."""
    out = Path(out).resolve()
    if out.is_dir():
        out = out / f"{name}.mender"
    device_types = [device_type] if isinstance(device_type, str) else list(device_type)
    if not device_types:
        raise ValueError("at least one device type is needed")
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"payload file names must be unique: {names}")
    with tempfile.TemporaryDirectory(prefix="fp-artifact-") as tmp_name:
        tmp = Path(tmp_name)
        payload = [Path(f).resolve() for f in files]
        if module == "single-file":
            if len(payload) != 1:
                raise ValueError("the single-file module installs exactly one file")
            if dest_dir is None or not dest_dir.startswith("/"):
                raise ValueError("single-file needs an absolute dest_dir")
            if names[0] in _SINGLE_FILE_META:
                raise ValueError(f"a payload named {names[0]!r} clashes with single-file's own")
            mode = permissions or format(stat.S_IMODE(payload[0].stat().st_mode), "o")
            for meta_name, value in (
                ("dest_dir", dest_dir),
                ("filename", names[0]),
                ("permissions", mode),
            ):
                _write(tmp / meta_name, f"{value}\n")
            payload = [tmp / "dest_dir", tmp / "filename", tmp / "permissions", *payload]
        elif dest_dir is not None:
            raise ValueError("dest_dir only applies to the single-file module")
        cmd = [MENDER_ARTIFACT, "write", "module-image", "-T", module, "-n", name]
        for dt in device_types:
            cmd += ["-t", dt]
        for path in payload:
            cmd += ["-f", str(path)]
        for key, value in (provides or {}).items():
            cmd += ["--provides", f"{key}:{value}"]
        for key, value in (depends or {}).items():
            cmd += ["--depends", f"{key}:{value}"]
        if meta_data is not None:
            _write(tmp / "meta-data.json", json.dumps(meta_data))
            cmd += ["--meta-data", str(tmp / "meta-data.json")]
        if software_name is not None:
            cmd += ["--software-name", software_name]
        if software_version is not None:
            cmd += ["--software-version", software_version]
        if compression is not None:
            cmd += ["--compression", compression]
        if signing_key is not None:
            cmd += ["--key", str(Path(signing_key).resolve())]
        cmd += [*extra_args, "-o", str(out)]
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(cmd, cwd=tmp)
    return out


def make_script_artifact(
    out: Path, name: str, device_type: str | Sequence[str], exit_code: int, *, message: str = ""
) -> Path:
    """A `script` module artifact whose payload prints `message` and exits with `exit_code`."""
    with tempfile.TemporaryDirectory(prefix="fp-script-") as tmp_name:
        script = Path(tmp_name) / "install.sh"
        text = message or f"fleetport test script for {name}: exit {exit_code}"
        _write(
            script,
            _shell_script(f"echo {shlex.quote(text)} >&2\nexit {int(exit_code)}"),
            mode=0o755,
        )
        return make_module_artifact(
            out, name=name, device_type=device_type, files=[script], module="script"
        )


def read_artifact(path: Path, *, key: Path | None = None) -> str:
    """`mender-artifact read` output (with `key`: verify the signature)."""
    cmd = [MENDER_ARTIFACT, "read", "--no-progress"]
    if key is not None:
        cmd += ["--key", str(key)]
    return _run([*cmd, str(path)]).stdout
