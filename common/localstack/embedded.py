"""The embedded Mongo-wire server (SecantusDB), run as a separate process.

SecantusDB is GPL-licensed, so Fleetport never imports it: it starts the `secantusd-py`
executable that the `embedded` extra installs next to the Python interpreter.

Durability: the server keeps a WiredTiger journal, but by default it acknowledges a commit
before the commit's journal record has left its memory, so a `kill -9` loses the latest
acknowledged writes (measured: about 50 of 2,000 inserts made just before the kill).
A write concern with `j: true` does not help: the server ignores it on the commit of a
multi-document transaction, which is how every service records a change with its outbox
effects. So the server runs with `--sync-on-commit`: each commit reaches the disk (fsync)
before it is acknowledged, transactions included, and an acknowledged write survives a
crash of the server or of the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from common.localstack.processes import spawn, stop_all

__all__ = ["EmbeddedMongo", "free_port", "free_ports"]

# Set in the environment, this makes the server skip its journal's fsync whatever its flags.
_FAST_STORAGE_ENV: Final = "SECANTUS_TEST_FAST_STORAGE"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports on 127.0.0.1 that are free right now.

    All are held at once while they are chosen: ports taken one at a time, each released
    before the next is asked for, may come back twice."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _executable() -> str:
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if found is None:
        raise RuntimeError(
            "secantusd-py not found: install the `embedded` extra (uv sync --all-extras)"
        )
    return found


class EmbeddedMongo:
    """A SecantusDB server process on 127.0.0.1; `storage` may be ':memory:'.

    `test_commands` enables what mongod's `enableTestCommands` does: `configureFailPoint`,
    which test suites use to make the server refuse chosen commands.
    """

    def __init__(
        self,
        storage: Path | str,
        port: int | None = None,
        log: Path | None = None,
        *,
        test_commands: bool = False,
    ) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.log = log
        self.test_commands = test_commands
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The connection string for clients, without retryable writes.

        The server keeps a record of every retryable write and, past 10,000 of them, prunes
        that record under a lock on each new one: every write then slows down. With a single
        local server there is no failover for the driver's one retry to ride out; a write
        that fails is answered 503 and the caller tries again.
        """
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers a ping."""
        if isinstance(self.storage, Path):
            self.storage.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(
            [
                _executable(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.storage),
                "--log-level",
                "WARNING",
                "--sync-on-commit",
                *(["--enable-test-commands"] if self.test_commands else []),
            ],
            env={k: v for k, v in os.environ.items() if k != _FAST_STORAGE_ENV},
            log=self.log,
        )
        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, object]]
        with MongoClient(self.url, serverSelectionTimeoutMS=500) as client:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"secantusd-py exited with {self._proc.returncode}")
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("embedded database did not start in time") from None
                    time.sleep(0.2)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    @property
    def pid(self) -> int | None:
        """The server's process id, once started."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it has exited (and is reaped), else None."""
        return None if self._proc is None else self._proc.poll()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is not None:
            stop_all([self._proc])
