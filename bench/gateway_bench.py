"""What one proxy hop costs, and what a 1 GiB transfer costs the gateway in memory.

    uv run python bench/gateway_bench.py                 # throughput, ~2 min
    uv run python bench/gateway_bench.py --upload-gib 1  # plus a 1 GiB upload and download

Every server is its own process on 127.0.0.1 with one uvicorn worker (uvloop, httptools):

- `upstream`: a FastAPI route returning a small JSON object;
- `issuer`: a stub of deviceauth and useradm publishing one public key and no revocations
  (it counts how often it is asked);
- `minimal proxy`: a bare raw-ASGI + aiohttp relay (`MinimalProxy` below), the baseline;
- the Fleetport gateway (`python -m gateway`), token checks on: each request carries a
  device JWT signed with the issuer's key, which the gateway checks itself.

Load comes from `wrk` when it is on PATH, else from a small aiohttp load generator in this
process (which then is the bottleneck; the report says which one ran). Results are written
to `bench/results/gateway.md` with a description of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import uvicorn
from yarl import URL

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procstats import cpu_seconds, machine, rss_kib  # noqa: E402

from common.core.tokens import generate_key_file, load_signing_key, public_jwk  # noqa: E402
from common.localstack.embedded import free_port  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "gateway.md"
TOKEN_SECTION: Final = "## Token checks on the device hot path"
BENCH_PATH: Final = "/api/devices/v1/inventory/bench"
UPLOAD_PATH: Final = "/api/management/v1/deployments/artifacts"
DOWNLOAD_PATH: Final = "/api/devices/v1/deployments/download/bench-blob"
CHUNK: Final = bytes(range(256)) * 4096  # 1 MiB
GIB: Final = 1024**3

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


# --------------------------------------------------------------------------- servers


def _upstream_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get(BENCH_PATH)
    async def bench() -> dict[str, object]:
        return {"status": "ok", "id": 42, "name": "fleetport", "tags": ["a", "b"]}

    return app


class Issuer:
    """deviceauth's and useradm's token routes: one public key, no revocations; it counts
    the requests (`GET /calls`)."""

    def __init__(self, key_file: str) -> None:
        self.calls = 0
        key = load_signing_key(Path(key_file))
        self._keys = json.dumps({"keys": [public_jwk(key.verifying())]}).encode()

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        status, body = 200, b""
        if path == "/calls":
            body = str(self.calls).encode()
        elif path.endswith("/tokens/keys"):
            self.calls += 1
            body = self._keys
        elif path.endswith("/tokens/revocations"):
            self.calls += 1
            query = scope["query_string"].decode()
            wait = float(dict(p.split("=") for p in query.split("&") if "=" in p).get("wait", 0))
            # A long poll with nothing to say: held for as long as it may be.
            await asyncio.sleep(wait)
            body = b'{"revocations": [], "more": false}'
        else:
            status = 204
        headers = [(b"content-type", b"application/json")] if body else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Bulk:
    """Hashes and discards uploads; serves a generated blob of any size for downloads."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            size = int(scope["query_string"].decode().partition("=")[2] or 0)
            headers = [(b"content-length", str(size).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            sent = 0
            while sent < size:
                piece = CHUNK[: min(len(CHUNK), size - sent)]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                sent += len(piece)
            await send({"type": "http.response.body", "body": b""})
            return
        digest, length = hashlib.sha256(), 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            digest.update(chunk)
            length += len(chunk)
            if not message.get("more_body", False):
                break
        body = json.dumps({"sha256": digest.hexdigest(), "length": length}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class MinimalProxy:
    """The baseline: a bare raw-ASGI app relaying requests over one aiohttp session."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(auto_decompress=False)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert self.session is not None
                    await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.session is not None
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k != b"host"]
        query = scope["query_string"].decode()
        url = self.upstream + scope["raw_path"].decode() + (f"?{query}" if query else "")
        async with self.session.request(
            scope["method"], URL(url, encoded=True), headers=headers, data=body or None
        ) as resp:
            payload = await resp.read()
            drop = (b"transfer-encoding", b"connection")
            out = [(k, v) for k, v in resp.raw_headers if k.lower() not in drop]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            await send({"type": "http.response.body", "body": payload})


def _serve(role: str, port: int, upstream: str) -> None:
    apps: dict[str, Callable[[], Any]] = {
        "upstream": _upstream_app,
        "issuer": lambda: Issuer(upstream),
        "bulk": Bulk,
        "minproxy": lambda: MinimalProxy(upstream),
    }
    serve_app(apps[role](), port, lifespan="on" if role == "minproxy" else "auto")


def serve_app(app: Any, port: int, *, lifespan: Literal["auto", "on", "off"]) -> None:
    """Serve `app` on 127.0.0.1:`port` with the gateway's own server settings
    (`gateway.server_config`), so a bench's stand-in costs what the gateway would."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        lifespan=lifespan,
    )


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A server process started by the benchmark."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Fleet:
    """The processes of one benchmark run; stopped together."""

    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = Proc(name, f"http://127.0.0.1:{port}", popen)
        self.procs.append(proc)
        return proc

    def serve(self, role: str, upstream: str = "") -> Proc:
        port = free_port()
        argv = [sys.executable, __file__, "serve", role, "--port", str(port)]
        return self.start(role, [*argv, "--upstream", upstream], {}, port)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs:
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


def _wait_http(url: str, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in time")


def _token(key_file: Path, *, user: bool = False) -> str:
    """A device (or user) token signed with the issuer stub's key."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "jti": "a7a2c0b0-0000-4000-8000-000000000001",
        "sub": "d3a1c0b0-0000-4000-8000-000000000002",
        "iss": "Mender",
        "iat": now,
        "exp": now + 7 * 86400,
    }
    if user:
        claims.update({"scp": "mender.*", "mender.user": True})
    else:
        claims["mender.device"] = True
    return load_signing_key(key_file).sign(claims)


def _issuer_key() -> Path:
    """A signing key for the issuer stub, in a file its process reads too."""
    path = Path(tempfile.mkdtemp(prefix="gateway-bench-")) / "issuer.pem"
    generate_key_file(path)
    return path


# --------------------------------------------------------------------------- load


@dataclass
class Run:
    """One load run against one target."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass
class Cell:
    """A target at a concurrency: the median of its interleaved runs, and its CPU cost."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time (user + system) the serving process spent per request, over all runs.
    cpu_us: float
    runs: list[float]


_UNITS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"unexpected latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _wrk(url: str, connections: int, duration: float, token: str) -> Run:
    threads = min(connections, os.cpu_count() or 1)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(duration)}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0)))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Run(rps, p50, p99, requests, errors)


async def _aiohttp_load(url: str, connections: int, duration: float, token: str) -> Run:
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + duration

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return Run(
        len(latencies) / elapsed,
        statistics.median(latencies),
        latencies[int(len(latencies) * 0.99) - 1],
        len(latencies),
        errors,
    )


def _load(url: str, connections: int, duration: float, token: str, use_wrk: bool) -> Run:
    if use_wrk:
        return _wrk(url, connections, duration, token)
    return asyncio.run(_aiohttp_load(url, connections, duration, token))


def _issuer_calls(issuer: Proc) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{issuer.url}/calls", timeout=5) as resp:
        return int(resp.read())


def _gateway_env(port: int, **addrs: str) -> dict[str, str]:
    env = {"GATEWAY_LISTEN_PORT": str(port), "GATEWAY_LOG_LEVEL": "warning"}
    for name, addr in addrs.items():
        env[f"GATEWAY_{name.upper()}_ADDR"] = addr
    return env


def run_throughput(
    duration: float, concurrencies: list[int], use_wrk: bool, rounds: int
) -> tuple[dict[str, dict[int, Cell]], int]:
    """Requests/s and latency of the three targets at each concurrency."""
    fleet = Fleet()
    try:
        upstream = fleet.serve("upstream")
        key_file = _issuer_key()
        issuer = fleet.serve("issuer", str(key_file))
        _wait_http(upstream.url + BENCH_PATH)
        _wait_http(issuer.url + "/calls")
        minproxy = fleet.serve("minproxy", upstream.url)
        port = free_port()
        gateway = fleet.start(
            "gateway",
            [sys.executable, "-m", "gateway"],
            _gateway_env(port, inventory=upstream.url, deviceauth=issuer.url),
            port,
        )
        _wait_http(minproxy.url + BENCH_PATH)
        _wait_http(gateway.url + "/status")
        token = _token(key_file)
        targets = {
            "FastAPI route, direct": upstream.url + BENCH_PATH,
            "minimal raw-ASGI + aiohttp proxy": minproxy.url + BENCH_PATH,
            "Fleetport gateway (token checks on)": gateway.url + BENCH_PATH,
        }
        servers = {
            "FastAPI route, direct": upstream,
            "minimal raw-ASGI + aiohttp proxy": minproxy,
            "Fleetport gateway (token checks on)": gateway,
        }
        results: dict[str, dict[int, Cell]] = {name: {} for name in targets}
        calls_before = _issuer_calls(issuer)
        for connections in concurrencies:
            runs: dict[str, list[Run]] = {name: [] for name in targets}
            cpu = dict.fromkeys(targets, 0.0)
            for url in targets.values():
                _load(url, connections, 1, token, use_wrk)  # warm-up
            # Short runs, interleaved, so that noise from other work on the machine
            # spreads over every target instead of landing on one.
            for _ in range(rounds):
                for name, url in targets.items():
                    pid = servers[name].pid
                    before = cpu_seconds(pid)
                    runs[name].append(_load(url, connections, duration / rounds, token, use_wrk))
                    cpu[name] += cpu_seconds(pid) - before
            for name in targets:
                ordered = sorted(runs[name], key=lambda r: r.rps)
                median = ordered[len(ordered) // 2]
                served = sum(r.requests for r in ordered)
                cell = Cell(
                    median.rps,
                    median.p50_ms,
                    median.p99_ms,
                    sum(r.errors for r in ordered),
                    cpu[name] / served * 1e6,
                    [r.rps for r in runs[name]],
                )
                results[name][connections] = cell
                print(
                    f"c={connections:<3} {name:<40} {cell.rps:>9,.0f} req/s  "
                    f"p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms  "
                    f"{cell.cpu_us:6.0f} CPU-us/req  runs {[round(x) for x in cell.runs]}",
                    flush=True,
                )
        return results, _issuer_calls(issuer) - calls_before
    finally:
        fleet.stop()


# --------------------------------------------------------------------------- transfers


@contextmanager
def _sample_rss(pid: int) -> Iterator[list[int]]:
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_kib(pid))
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


@dataclass
class Transfer:
    """One streamed transfer through the gateway and the gateway's RSS around it."""

    direction: str
    size: int
    seconds: float
    intact: bool
    rss_before_kib: int
    rss_peak_kib: int
    rss_after_kib: int


async def _upload(url: str, size: int, token: str) -> bool:
    digest = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        for piece in _blob_chunks(size):
            digest.update(piece)
            yield piece

    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=chunks(), headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        result = await resp.json(content_type=None)
    return bool(result["length"] == size and result["sha256"] == digest.hexdigest())


def _blob_chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(piece)
        yield piece


async def _download(url: str, size: int) -> bool:
    received, digest = 0, hashlib.sha256()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        declared = resp.content_length
        async for chunk in resp.content.iter_any():
            received += len(chunk)
            digest.update(chunk)
    expected = hashlib.sha256()
    for piece in _blob_chunks(size):
        expected.update(piece)
    return received == size and declared == size and digest.digest() == expected.digest()


def run_transfers(gib: float) -> list[Transfer]:
    """Stream `gib` GiB up and down through the gateway, sampling its RSS."""
    size = int(gib * GIB)
    fleet = Fleet()
    try:
        bulk = fleet.serve("bulk")
        key_file = _issuer_key()
        issuer = fleet.serve("issuer", str(key_file))
        _wait_http(issuer.url + "/calls")
        port = free_port()
        gateway = fleet.start(
            "gateway",
            [sys.executable, "-m", "gateway"],
            _gateway_env(port, deployments=bulk.url, useradm=issuer.url),
            port,
        )
        _wait_http(gateway.url + "/status")
        token = _token(key_file, user=True)
        # Warm the gateway (first requests import and allocate what they need).
        asyncio.run(_upload(gateway.url + UPLOAD_PATH, 4 * 1024 * 1024, token))
        asyncio.run(_download(f"{gateway.url}{DOWNLOAD_PATH}?size={4 * 1024 * 1024}", 4 << 20))
        transfers = []
        for direction in ("upload", "download"):
            before = rss_kib(gateway.pid)
            started = time.monotonic()
            with _sample_rss(gateway.pid) as samples:
                if direction == "upload":
                    intact = asyncio.run(_upload(gateway.url + UPLOAD_PATH, size, token))
                else:
                    url = f"{gateway.url}{DOWNLOAD_PATH}?size={size}"
                    intact = asyncio.run(_download(url, size))
            seconds = time.monotonic() - started
            time.sleep(0.5)
            after = rss_kib(gateway.pid)
            transfers.append(
                Transfer(direction, size, seconds, intact, before, max(samples), after)
            )
            print(
                f"{direction}: {size / GIB:.2f} GiB in {seconds:.1f} s, intact={intact}, "
                f"RSS before {before / 1024:.1f} MiB, peak {max(samples) / 1024:.1f} MiB, "
                f"after {after / 1024:.1f} MiB",
                flush=True,
            )
        return transfers
    finally:
        fleet.stop()


# --------------------------------------------------------------------------- report


def _machine() -> list[str]:
    versions = {name: _version(name) for name in ("aiohttp", "uvicorn", "fastapi", "uvloop")}
    return [*machine(), "- " + ", ".join(f"{k} {v}" for k, v in versions.items())]


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _paragraph(text: str) -> list[str]:
    return textwrap.wrap(text, width=92, break_on_hyphens=False)


def write_report(
    path: Path,
    *,
    throughput: tuple[dict[str, dict[int, Cell]], int] | None,
    transfers: list[Transfer] | None,
    duration: float,
    rounds: int,
    load_tool: str,
) -> None:
    """Write the results as markdown."""
    lines = ["# Gateway benchmark results", "", "Written by `bench/gateway_bench.py`.", ""]
    lines += [*_machine(), ""]
    if throughput is not None:
        results, issuer_calls = throughput
        concurrencies = sorted(next(iter(results.values())))
        lines += [
            "## One proxy hop",
            "",
            *_paragraph(
                f"Load: {load_tool}. Per concurrency, each target gets a 1 s warm-up, then "
                f"{rounds} runs of {duration / rounds:g} s interleaved with the other "
                f"targets' ({duration:g} s per cell); the table shows the median run. "
                "`CPU µs/req` is the user + system CPU time of the serving process per "
                "request over all its runs: unlike requests/s, it hardly depends on what "
                "else the machine is doing. Everything runs on 127.0.0.1 with one uvicorn "
                "worker per process (uvloop, httptools, the same server settings for all). "
                "The upstream is a FastAPI route returning a small JSON object. The Fleetport "
                "gateway checks a signed device JWT on every request, itself: signature "
                "(once per token), expiry and revocations; the issuer stub was asked "
                f"{issuer_calls} times (keys, revocation long polls) during all of its runs."
            ),
            "",
            "| path | "
            + " | ".join(f"c={c} req/s | p50 ms | p99 ms | CPU µs/req" for c in concurrencies)
            + " |",
            "| --- | " + " | ".join("---: | ---: | ---: | ---:" for _ in concurrencies) + " |",
        ]
        for name, cells in results.items():
            row = " | ".join(
                f"{cells[c].rps:,.0f} | {cells[c].p50_ms:.2f} | {cells[c].p99_ms:.2f} | "
                f"{cells[c].cpu_us:.0f}"
                for c in concurrencies
            )
            lines.append(f"| {name} | {row} |")
        names = list(results)
        gateway, minimal = results[names[2]], results[names[1]]
        ratios = ", ".join(f"c={c}: {gateway[c].rps / minimal[c].rps:.2f}" for c in concurrencies)
        cpu_ratios = ", ".join(
            f"c={c}: {minimal[c].cpu_us / gateway[c].cpu_us:.2f}" for c in concurrencies
        )
        errors = sum(cell.errors for cells in results.values() for cell in cells.values())
        lines += [
            "",
            f"Fleetport gateway / minimal proxy, requests/s: {ratios} (target ≥ 0.70).",
            f"Minimal proxy / Fleetport gateway, CPU per request: {cpu_ratios}.",
            f"Non-2xx responses and socket errors over all runs: {errors}.",
            "",
            "Requests/s of every run, in order:",
            "",
        ]
        for name, cells in results.items():
            for c in concurrencies:
                runs = ", ".join(f"{x:,.0f}" for x in cells[c].runs)
                lines.append(f"- {name}, c={c}: {runs}")
        lines.append("")
    if transfers:
        lines += [
            f"## Streaming {transfers[0].size / GIB:g} GiB through the gateway",
            "",
            *_paragraph(
                "A chunked upload to a user route whose upstream hashes and discards it, and "
                "a download with Content-Length from a signed-link route, both checked "
                "against a SHA-256 of what was sent. RSS of the gateway process (`VmRSS`, "
                "sampled every 20 ms)."
            ),
            "",
            "| transfer | size | time | MiB/s | intact | RSS before | RSS peak | RSS after |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for t in transfers:
            lines.append(
                f"| {t.direction} | {t.size / GIB:.2f} GiB | {t.seconds:.1f} s | "
                f"{t.size / 1024 / 1024 / t.seconds:,.0f} | {'yes' if t.intact else 'NO'} | "
                f"{t.rss_before_kib / 1024:.1f} MiB | {t.rss_peak_kib / 1024:.1f} MiB | "
                f"{t.rss_after_kib / 1024:.1f} MiB |"
            )
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    # `token_bench.py` keeps its results in the same file, from this heading on.
    kept = path.read_text().partition(TOKEN_SECTION)[2] if path.exists() else ""
    text = "\n".join(lines)
    if kept:
        text = text.rstrip("\n") + "\n\n" + TOKEN_SECTION + kept
    path.write_text(text)
    print(f"wrote {path}")


def main() -> int:
    """Run the benchmark (or, with `serve`, one of its servers)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run one server of the benchmark (used internally)")
    serve.add_argument("role", choices=["upstream", "issuer", "bulk", "minproxy"])
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--upstream", default="")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs per cell")
    parser.add_argument("--upload-gib", type=float, default=0.0, help="also stream N GiB")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-wrk", action="store_true", help="use the aiohttp load generator")
    args = parser.parse_args()
    if args.command == "serve":
        _serve(args.role, args.port, args.upstream)
        return 0
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    load_tool = "wrk (threads = min(connections, nproc))" if use_wrk else "aiohttp load generator"
    throughput = None
    if not args.skip_throughput:
        throughput = run_throughput(args.duration, args.connections, use_wrk, args.rounds)
    transfers = run_transfers(args.upload_gib) if args.upload_gib > 0 else None
    write_report(
        args.output,
        throughput=throughput,
        transfers=transfers,
        duration=args.duration,
        rounds=args.rounds,
        load_tool=load_tool,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
