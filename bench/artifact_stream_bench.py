"""What a large artifact upload and download cost every process of the stack in memory.

    uv run python bench/artifact_stream_bench.py                    # 1 GiB, gzip (~3 min)
    uv run python bench/artifact_stream_bench.py --size 256MiB --compression none

Starts the whole server with `common.localstack.launcher.Stack` (the embedded database,
every built service and the gateway, each its own process, state in a temporary directory),
creates an admin with useradm's command line and logs in through the gateway. It then writes
a payload of pseudo-random bytes to a file, builds a real artifact from it with
`mender-artifact write module-image -T single-file`, uploads it through the gateway as
`mender-cli` does (a chunked multipart body with `size`, `description` and `artifact`, read
from disk as it is sent), fetches its download link and downloads it through the gateway to
/dev/null, checking the SHA-256 against the file. Meanwhile the resident memory (`VmRSS`) of
every process of the stack is sampled. Results go to `bench/results/artifact_stream.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import create_admin  # noqa: E402
from procstats import cpu_seconds, machine, rss_kib  # noqa: E402

from common.localstack.embedded import free_port  # noqa: E402
from common.localstack.launcher import Stack  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "artifact_stream.md"
LOGIN: Final = "/api/management/v1/useradm/auth/login"
ARTIFACTS: Final = "/api/management/v1/deployments/artifacts"
MENDER_ARTIFACT: Final = "/usr/bin/mender-artifact"
ADMIN: Final = ("bench@example.com", "bench-password-1")
MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
READ_CHUNK: Final = MIB
# Growth of a process's RSS above this during a transfer is reported as not flat.
FLAT_KIB: Final = 8 * 1024
_UNITS: Final = {"": 1, "k": 1024, "m": MIB, "g": GIB}


def parse_size(text: str) -> int:
    """Bytes from `1073741824`, `512MiB`, `1G`, `1.5GiB` …"""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


# --------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def stack_processes(stack: Stack) -> dict[str, int]:
    """Every process of the stack by name, with any children they started."""
    top = stack.pids()
    found: dict[str, int] = {}
    for name, pid in sorted(top.items()):
        found[name] = pid
        pending = [(name, pid)]
        while pending:
            parent_name, parent = pending.pop()
            for child in _children(parent):
                child_name = f"{parent_name}/{_comm(child)}[{child}]"
                found[child_name] = child
                pending.append((child_name, child))
    return found


class Sampler:
    """Samples the RSS of a set of processes on a thread; `phase()` marks what runs."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        self.pids = pids
        self.interval = interval
        self.peaks: dict[str, dict[str, int]] = {}
        self.samples = 0
        self._phase = "idle"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            readings = {name: rss_kib(pid) for name, pid in self.pids.items()}
            with self._lock:
                peaks = self.peaks.setdefault(self._phase, {})
                for name, kib in readings.items():
                    peaks[name] = max(peaks.get(name, 0), kib)
                self.samples += 1
            self._stop.wait(self.interval)

    def snapshot(self) -> dict[str, int]:
        """The RSS of every process right now."""
        return {name: rss_kib(pid) for name, pid in self.pids.items()}

    def cpu(self) -> dict[str, float]:
        """The CPU seconds (user + system) every process has used so far."""
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute the samples taken inside the block to `name`."""
        with self._lock:
            self._phase = name
        # One sample at the start, so a short phase still has its own reading.
        with self._lock:
            peaks = self.peaks.setdefault(name, {})
            for proc, kib in self.snapshot().items():
                peaks[proc] = max(peaks.get(proc, 0), kib)
        try:
            yield
        finally:
            with self._lock:
                self._phase = "idle"

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- the artifact


def write_payload(path: Path, size: int) -> None:
    """`size` pseudo-random bytes (incompressible, like a real image's worst case)."""
    seed = os.urandom(32)
    with path.open("wb") as out:
        written, counter = 0, 0
        while written < size:
            # SHAKE-256 output keyed by a random seed: incompressible, and faster here than
            # os.urandom (about 470 against 370 MiB/s on the development machine).
            block = hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(
                min(READ_CHUNK, size - written)
            )
            out.write(block)
            written += len(block)
            counter += 1


def build_artifact(work: Path, payload: Path, *, name: str, compression: str) -> Path:
    """A single-file module-image artifact holding `payload`."""
    for meta, text in (("dest_dir", "/tmp/bench\n"), ("filename", "payload\n")):
        (work / meta).write_text(text)
    (work / "permissions").write_text("644\n")
    out = work / f"{name}.mender"
    subprocess.run(
        [MENDER_ARTIFACT, "write", "module-image", "-T", "single-file", "-n", name,
         "-t", "bench-device", "--compression", compression,
         "-f", str(work / "dest_dir"), "-f", str(work / "filename"),
         "-f", str(work / "permissions"), "-f", str(payload), "-o", str(out)],
        check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------- transfers


@dataclass
class Transfer:
    """One streamed transfer through the gateway."""

    name: str
    size: int
    seconds: float
    intact: bool
    detail: str


@dataclass
class Result:
    """Everything one run measured."""

    size: int
    payload_size: int
    compression: str
    build_seconds: float
    interval_ms: float
    transfers: list[Transfer] = field(default_factory=list)
    rss: dict[str, dict[str, int]] = field(default_factory=dict)  # phase → process → KiB
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase → process → s
    samples: int = 0
    processes: dict[str, int] = field(default_factory=dict)


def _multipart_head(boundary: str, size: int, description: str, filename: str) -> bytes:
    def field_part(name: str, value: str) -> str:
        return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'

    return (
        field_part("size", str(size))
        + field_part("description", description)
        + f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


async def _file_chunks(path: Path, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with path.open("rb") as handle:
        while True:
            chunk = await loop.run_in_executor(None, handle.read, READ_CHUNK)
            if not chunk:
                return
            digest.update(chunk)
            yield chunk


async def upload(
    session: aiohttp.ClientSession, base: str, token: str, artifact: Path
) -> tuple[str, str]:
    """Upload as mender-cli does (chunked multipart); the new id and the file's SHA-256."""
    boundary = uuid.uuid4().hex
    size = (await asyncio.to_thread(artifact.stat)).st_size
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        yield _multipart_head(boundary, size, "streamed by the benchmark", artifact.name)
        async for chunk in _file_chunks(artifact, digest):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    async with session.post(base + ARTIFACTS, data=body(), headers=headers) as response:
        text = await response.text()
        if response.status != 201:
            raise RuntimeError(f"upload answered {response.status}: {text[:300]}")
        artifact_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    return artifact_id, digest.hexdigest()


async def download_link(
    session: aiohttp.ClientSession, base: str, token: str, artifact_id: str
) -> str:
    """The signed download link of an artifact."""
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{base}{ARTIFACTS}/{artifact_id}/download", headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"download link answered {r.status}: {await r.text()}")
        uri: str = (await r.json())["uri"]
    return uri


async def download(session: aiohttp.ClientSession, uri: str) -> tuple[int, int | None, str]:
    """Stream the link's body to /dev/null; bytes received, Content-Length, SHA-256."""
    digest, received = hashlib.sha256(), 0
    loop = asyncio.get_running_loop()
    sink = await asyncio.to_thread(open, os.devnull, "wb")
    with sink:
        async with session.get(uri) as response:
            if response.status != 200:
                raise RuntimeError(f"download answered {response.status}")
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                received += len(chunk)
                digest.update(chunk)
                await loop.run_in_executor(None, sink.write, chunk)
            return received, response.content_length, digest.hexdigest()


async def login(session: aiohttp.ClientSession, base: str) -> str:
    """A user JWT for the benchmark's admin."""
    basic = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    async with session.post(base + LOGIN, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"login answered {response.status}")
        return await response.text()


async def _transfers(stack: Stack, artifact: Path, warmup: Path, result: Result) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        token = await login(session, stack.url)
        # Warm every process on the path (imports, pools, first allocations) with a small
        # artifact, so that the large one measures streaming rather than start-up.
        warm_id, _ = await upload(session, stack.url, token, warmup)
        await download(session, await download_link(session, stack.url, token, warm_id))
        await asyncio.sleep(1.0)
        processes = stack_processes(stack)
        result.processes = processes
        with Sampler(processes, result.interval_ms / 1000) as sampler:
            await asyncio.sleep(1.0)
            result.rss["before"] = sampler.snapshot()

            cpu = sampler.cpu()
            started = time.monotonic()
            with sampler.phase("upload"):
                artifact_id, sha = await upload(session, stack.url, token, artifact)
            seconds = time.monotonic() - started
            result.cpu["upload"] = _spent(cpu, sampler.cpu())
            result.transfers.append(
                Transfer("upload (chunked multipart, 201)", result.size, seconds, True, "")
            )
            print(f"upload: {seconds:.1f} s", flush=True)

            uri = await download_link(session, stack.url, token, artifact_id)
            await asyncio.sleep(1.0)
            result.rss["between"] = sampler.snapshot()
            cpu = sampler.cpu()
            started = time.monotonic()
            with sampler.phase("download"):
                received, declared, got = await download(session, uri)
            seconds = time.monotonic() - started
            result.cpu["download"] = _spent(cpu, sampler.cpu())
            intact = received == result.size and declared == result.size and got == sha
            detail = "" if intact else f"received {received}, declared {declared}, sha {got}"
            result.transfers.append(
                Transfer("download (signed link, 200)", result.size, seconds, intact, detail)
            )
            print(f"download: {seconds:.1f} s, intact={intact}", flush=True)

            await asyncio.sleep(2.0)
            result.rss["after"] = sampler.snapshot()
        result.rss["upload"] = sampler.peaks.get("upload", {})
        result.rss["download"] = sampler.peaks.get("download", {})
        result.samples = sampler.samples


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def run(size: int, compression: str, interval_ms: float, deadline: float) -> Result:
    """Start the stack, build and move the artifact, stop everything; the measurements."""
    with tempfile.TemporaryDirectory(prefix="fleetport-bench-") as tmp:
        work = Path(tmp)
        payload = work / "payload"
        # The artifact adds tar headers and metadata (a few KiB); the payload is the size
        # asked for, so the artifact is within a fraction of a percent of it.
        started = time.monotonic()
        write_payload(payload, size)
        artifact = build_artifact(work, payload, name="stream-bench", compression=compression)
        payload.unlink()
        build_seconds = time.monotonic() - started
        small = work / "small"
        small.mkdir()
        write_payload(small / "payload", MIB)
        warmup = build_artifact(small, small / "payload", name="warm-up", compression=compression)
        result = Result(
            size=artifact.stat().st_size,
            payload_size=size,
            compression=compression,
            build_seconds=build_seconds,
            interval_ms=interval_ms,
        )
        print(
            f"artifact: {result.size / MIB:,.1f} MiB ({compression}) built in "
            f"{build_seconds:.0f} s",
            flush=True,
        )
        stack = Stack(
            state_dir=work / "stack",
            gateway_port=free_port(),
            extra_env={"DEPLOYMENTS_LOG_LEVEL": "WARNING"},
        )
        stack.start()
        try:
            create_admin(stack, ADMIN)
            remaining = max(1.0, deadline - time.monotonic())
            asyncio.run(asyncio.wait_for(_transfers(stack, artifact, warmup, result), remaining))
        finally:
            stack.stop()
    return result


# --------------------------------------------------------------------------- report


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def report(results: list[Result]) -> str:
    """The results as markdown."""
    lines = [
        "# Artifact streaming benchmark results",
        "",
        "Written by `bench/artifact_stream_bench.py`.",
        "",
        *machine(),
        "",
    ]
    for result in results:
        lines += [
            f"## {result.size / GIB:.2f} GiB artifact, payload compression `{result.compression}`",
            "",
            *textwrap.wrap(
                f"A single-file module-image artifact of {result.size:,} bytes "
                f"({result.payload_size:,} bytes of pseudo-random payload, built by "
                f"mender-artifact in {result.build_seconds:.0f} s) uploaded through the "
                "gateway as a chunked multipart body (`size`, `description`, `artifact`) read "
                "from disk as it is sent, then downloaded through the gateway from its signed "
                "link to /dev/null and checked against the file's SHA-256. Everything runs on "
                "127.0.0.1; the client is this script (aiohttp).",
                width=92,
            ),
            "",
            "| transfer | size | time | MiB/s | intact |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for t in result.transfers:
            intact = "yes" if t.intact else f"NO ({t.detail})"
            lines.append(
                f"| {t.name} | {t.size / MIB:,.0f} MiB | {t.seconds:.1f} s | "
                f"{t.size / MIB / t.seconds:,.0f} | {intact} |"
            )
        lines += [
            "",
            *textwrap.wrap(
                f"Resident memory (`VmRSS`, MiB) of every process of the stack, sampled every "
                f"{result.interval_ms:g} ms ({result.samples:,} samples): right before the "
                "upload, the peak during the upload, right before the download, the peak during "
                "the download, and 2 s after it. `growth` is the largest peak minus `before`. "
                "CPU is user + system seconds spent during each transfer.",
                width=92,
            ),
            "",
            "| process | pid | before | upload peak | between | download peak | after | "
            "growth | CPU up s | CPU down s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        grown: list[str] = []
        for name, pid in result.processes.items():
            rss = {phase: values.get(name, 0) for phase, values in result.rss.items()}
            growth = max(rss["upload"], rss["download"], rss["after"]) - rss["before"]
            if growth > FLAT_KIB:
                grown += [
                    f"{name} {(rss[phase] - rss['before']) / 1024:+.1f} MiB at its {phase} peak"
                    for phase in ("upload", "download")
                    if rss[phase] - rss["before"] > FLAT_KIB
                ]
                if rss["after"] - rss["before"] > FLAT_KIB:
                    grown.append(
                        f"{name} still {(rss['after'] - rss['before']) / 1024:+.1f} MiB after"
                    )
            lines.append(
                f"| {name} | {pid} | {_mib(rss['before'])} | {_mib(rss['upload'])} | "
                f"{_mib(rss['between'])} | {_mib(rss['download'])} | {_mib(rss['after'])} | "
                f"{growth / 1024:+.1f} | {result.cpu['upload'].get(name, 0.0):.1f} | "
                f"{result.cpu['download'].get(name, 0.0):.1f} |"
            )
        lines += [
            "",
            f"Not flat (more than {FLAT_KIB // 1024} MiB above `before`): {'; '.join(grown)}."
            if grown
            else f"Flat: every process stayed within {FLAT_KIB // 1024} MiB of `before`.",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=parse_size, default=GIB, help="payload size (default 1GiB; 512MiB …)"
    )
    parser.add_argument(
        "--compression",
        nargs="+",
        choices=["none", "gzip", "lzma"],
        default=["gzip"],
        help="payload compression of the artifact; several values run one after the other",
    )
    parser.add_argument("--interval-ms", type=float, default=25.0, help="RSS sampling period")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="give up (and stop everything) after this"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not Path(MENDER_ARTIFACT).exists() and shutil.which("mender-artifact") is None:
        print("mender-artifact is not installed", file=sys.stderr)
        return 1

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM unwinds like Ctrl-C, so the stack's processes are stopped either way.
    signal.signal(signal.SIGTERM, interrupt)
    deadline = time.monotonic() + args.timeout
    results = [run(args.size, c, args.interval_ms, deadline) for c in args.compression]
    text = report(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
