"""What the device hot path of deployments costs: `next` polls and status reports.

    uv run python bench/deployments_bench.py            # every run below (~35 min)
    uv run python bench/deployments_bench.py --runs direct --devices 2000 --connections 32

The runs (`--runs`), each on fresh processes and a fresh in-memory embedded Mongo-wire server:

- `direct`: `python -m services.deployments` alone (one uvicorn worker on 127.0.0.1, local
  storage), called with well-formed but unsigned tokens (the service decodes, the gateway
  would verify), `--devices` devices over `--connections` connections (default 1000 / 8);
- `direct-high`: the same at `--high-connections` concurrent connections (default 300) with
  `--high-devices` devices (default 1500);
- `gateway`: the whole server (`common.localstack.launcher.Stack`: every service and the
  gateway) with `--high-devices` real devices (Ed25519 keys, preauthorized and authenticated
  through the gateway, each with its own device JWT) polling through the gateway over
  `--high-connections` connections; the gateway verifies every token (signature, and its
  cached state from deviceauth). The devices join in batches of 100, each provisioned in
  inventory by deviceauth's outbox before the next, so the phases start on a quiet stack;
- `direct-high-retry`, `gateway-retry`: `direct-high` and `gateway` with `retryWrites=true`
  in the services' Mongo URL (the embedded server's URL turns retryable writes off).

Each run uploads a real artifact (`mender-artifact`) and drives the phases a fleet goes
through, each device once per phase: polls with nothing to do (before the deployment
exists), first polls (device deployments created), repeat polls, repeat polls sending back
the last answer's `ETag` in `If-None-Match` (answered 304), and the status reports
`downloading`, `installing`, `success`. It counts the database operations of each phase
(the server's `top` command, per database) and the CPU time of every server process, checks
the statistics are exact at the end and writes `bench/results/deployments.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import datetime as dt
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from pymongo import AsyncMongoClient

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import create_admin, register_device  # noqa: E402
from procstats import cpu_seconds  # noqa: E402

from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402
from common.localstack.launcher import Stack  # noqa: E402

NEXT: Final = "/api/devices/v2/deployments/device/deployments/next"
STATUS: Final = "/api/devices/v1/deployments/device/deployments/{}/status"
ARTIFACTS: Final = "/api/management/v1/deployments/artifacts"
DEPLOYMENTS: Final = "/api/management/v1/deployments/deployments"
LOGIN: Final = "/api/management/v1/useradm/auth/login"
INVENTORY_DEVICES: Final = "/api/management/v1/inventory/devices"
ADMIN: Final = ("bench@example.com", "bench-password-1")
RUNS: Final = ("direct", "direct-high", "direct-high-retry", "gateway", "gateway-retry")
# The variants ending in `-retry` turn retryable writes back on, which the embedded server
# slows down once it has recorded 10,000 of them (see
# `common.localstack.embedded.EmbeddedMongo.url`).
RETRY: Final = "retryWrites=true"
_SYSTEM_DBS: Final = frozenset({"admin", "local", "config"})
# How long deviceauth's outbox may take to provision a batch of new devices in inventory.
_OUTBOX_WAIT: Final = 300.0
_REGISTER_BATCH: Final = 100
_REGISTER_CONCURRENCY: Final = 16


# --------------------------------------------------------------------------- helpers


def _token(claims: dict[str, object]) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _artifact(work: Path) -> bytes:
    for name, text in (("dest_dir", "/tmp/x\n"), ("filename", "f\n"), ("permissions", "644\n")):
        (work / name).write_text(text)
    (work / "f").write_bytes(os.urandom(4096))
    out = work / "bench.mender"
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "single-file", "-n", "bench-2.0",
         "-t", "bench-device", "-f", str(work / "dest_dir"), "-f", str(work / "filename"),
         "-f", str(work / "permissions"), "-f", str(work / "f"), "-o", str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


def _multipart(artifact: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
            'filename="a.mender"\r\n\r\n'
        ).encode()
        + artifact
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _with_options(url: str, options: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query)) | dict(urllib.parse.parse_qsl(options))
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


async def _wait_healthy(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with session.get(url) as response:
                if response.status == 204:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


# --------------------------------------------------------------------------- measuring


class OpCounter:
    """Operations per database, from the server's `top` command (counts since start)."""

    def __init__(self, url: str) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)

    async def counts(self) -> dict[str, int]:
        """Operations served so far, per database."""
        top = await self._client.admin.command("top")
        found: dict[str, int] = {}
        for namespace, value in top["totals"].items():
            if not isinstance(value, dict) or "." not in namespace:
                continue
            database = namespace.split(".", 1)[0]
            if database in _SYSTEM_DBS:
                continue
            found[database] = found.get(database, 0) + int(value["total"]["count"])
        return found

    async def close(self) -> None:
        """Release the client."""
        await self._client.close()


@dataclass
class Phase:
    """One phase of a run: every device once."""

    label: str
    requests: int
    rps: float
    p50: float
    p99: float
    failures: int
    unexpected: dict[int, int]  # status (0: no response) → count, for unexpected statuses
    ops: dict[str, float]  # database → operations per request
    cpu: dict[str, float]  # process → CPU ms per request


@dataclass
class Run:
    """One benchmark run."""

    name: str
    title: str
    devices: int
    connections: int
    phases: list[Phase] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    setup: str = ""


Call = Callable[[aiohttp.ClientSession, str], Awaitable[int]]


async def _phase(
    label: str,
    session: aiohttp.ClientSession,
    devices: list[str],
    connections: int,
    call: Call,
    expected: int,
    *,
    ops: OpCounter,
    pids: Mapping[str, int],
) -> Phase:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for device in devices:
        queue.put_nowait(device)
    latencies: list[float] = []
    failures = 0
    unexpected: collections.Counter[int] = collections.Counter()

    async def worker() -> None:
        nonlocal failures
        while not queue.empty():
            device = queue.get_nowait()
            start = time.perf_counter()
            try:
                status = await call(session, device)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            latencies.append(time.perf_counter() - start)
            if status != expected:
                failures += 1
                unexpected[status] += 1

    ops_before = await ops.counts()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    ops_after = await ops.counts()
    latencies.sort()
    count = len(latencies)
    phase = Phase(
        label=label,
        requests=count,
        rps=count / elapsed,
        p50=statistics.median(latencies) * 1000,
        p99=latencies[max(0, math.ceil(count * 0.99) - 1)] * 1000,
        failures=failures,
        unexpected=dict(sorted(unexpected.items())),
        ops={
            db: (n - ops_before.get(db, 0)) / count
            for db, n in ops_after.items()
            if n - ops_before.get(db, 0)
        },
        cpu={name: (cpu_after[name] - cpu_before[name]) * 1000 / count for name in pids},
    )
    print(
        f"  {label:<42} {phase.rps:7,.0f} req/s  p50 {phase.p50:7.1f} ms  "
        f"p99 {phase.p99:7.1f} ms  unexpected {failures} {phase.unexpected or ''}",
        flush=True,
    )
    return phase


async def _drive(
    run: Run,
    session: aiohttp.ClientSession,
    *,
    base: str,
    user: dict[str, str],
    tokens: Mapping[str, str],
    artifact: bytes,
    ops: OpCounter,
    pids: Mapping[str, int],
) -> None:
    """Upload the artifact, run every phase, read the final statistics into `run`."""
    body, content_type = _multipart(artifact)
    async with session.post(
        base + ARTIFACTS, data=body, headers={**user, "Content-Type": content_type}
    ) as response:
        if response.status != 201:
            raise RuntimeError(f"artifact upload answered {response.status}")
    devices = list(tokens)
    deployment = ""

    tags: dict[str, str] = {}

    async def poll(client: aiohttp.ClientSession, device: str) -> int:
        provides = {"artifact_name": "bench-1.0", "device_type": "bench-device"}
        async with client.post(
            base + NEXT, json={"device_provides": provides}, headers=_bearer(tokens[device])
        ) as response:
            await response.read()
            if "ETag" in response.headers:
                tags[device] = response.headers["ETag"]
            return response.status

    async def poll_tagged(client: aiohttp.ClientSession, device: str) -> int:
        """A poll sending back the `ETag` of the device's last answer (`If-None-Match`)."""
        provides = {"artifact_name": "bench-1.0", "device_type": "bench-device"}
        headers = {**_bearer(tokens[device]), "If-None-Match": tags.get(device, "")}
        async with client.post(
            base + NEXT, json={"device_provides": provides}, headers=headers
        ) as response:
            await response.read()
            return response.status

    def report(status: str) -> Call:
        async def call(client: aiohttp.ClientSession, device: str) -> int:
            async with client.put(
                base + STATUS.format(deployment),
                json={"status": status},
                headers=_bearer(tokens[device]),
            ) as response:
                await response.read()
                return response.status

        return call

    async def phase(label: str, call: Call, expected: int) -> None:
        run.phases.append(
            await _phase(
                label, session, devices, run.connections, call, expected, ops=ops, pids=pids
            )
        )

    print(f"{run.title}:", flush=True)
    await phase("poll, nothing to do", poll, 204)
    async with session.post(
        base + DEPLOYMENTS,
        json={"name": "bench", "artifact_name": "bench-2.0", "devices": devices},
        headers=user,
    ) as response:
        if response.status != 201:
            raise RuntimeError(f"deployment creation answered {response.status}")
        deployment = response.headers["Location"].rsplit("/", 1)[1]
    await phase("poll, first (device deployment created)", poll, 200)
    await phase("poll, update under way", poll, 200)
    await phase("poll, update under way, If-None-Match", poll_tagged, 304)
    await phase("status downloading", report("downloading"), 204)
    await phase("status installing", report("installing"), 204)
    await phase("status success", report("success"), 204)
    async with session.get(f"{base}{DEPLOYMENTS}/{deployment}/statistics", headers=user) as r:
        run.stats = await r.json()


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=120)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


# --------------------------------------------------------------------------- runs


async def run_direct(
    name: str, devices_count: int, connections: int, work: Path, *, mongo_options: str = ""
) -> Run:
    """Deployments alone, called with unsigned tokens."""
    suffix = f", `{mongo_options}`" if mongo_options else ""
    run = Run(
        name,
        f"Direct to deployments, {devices_count} devices, {connections} connections{suffix}",
        devices_count,
        connections,
        setup=(
            "`python -m services.deployments` alone (one uvicorn worker), called directly "
            "with well-formed unsigned tokens (behind the gateway, the service only decodes "
            "them)." + (f" Its Mongo URL carries `{mongo_options}`." if mongo_options else "")
        ),
    )
    database = EmbeddedMongo(":memory:")
    database.start()
    port = free_port()
    env = {
        **os.environ,
        "DEPLOYMENTS_LISTEN_PORT": str(port),
        "DEPLOYMENTS_MONGO_URL": _with_options(database.url, mongo_options),
        "DEPLOYMENTS_DEV_MODE": "true",
        "DEPLOYMENTS_STORAGE_PATH": str(work / f"storage-{name}"),
        "DEPLOYMENTS_LOG_LEVEL": "WARNING",
    }
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.deployments",
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ops = OpCounter(database.url)
    try:
        base = f"http://127.0.0.1:{port}"
        assert database.pid is not None
        pids = {"deployments": service.pid, "database": database.pid}
        tokens = {
            f"device-{i:06d}": _token({"sub": f"device-{i:06d}", "mender.device": True})
            for i in range(devices_count)
        }
        user = _bearer(_token({"sub": "bench", "mender.user": True}))
        async with _session(connections) as session:
            await _wait_healthy(session, base + "/api/internal/v1/deployments/health")
            await _drive(
                run,
                session,
                base=base,
                user=user,
                tokens=tokens,
                artifact=_artifact(work),
                ops=ops,
                pids=pids,
            )
    finally:
        await ops.close()
        if service.returncode is None:
            service.terminate()
            try:
                await asyncio.wait_for(service.wait(), 10)
            except TimeoutError:
                service.kill()
                await service.wait()
        database.stop()
    return run


async def _registered_everywhere(
    session: aiohttp.ClientSession, base: str, admin: str, count: int
) -> None:
    """Wait until inventory has every device (deviceauth's outbox has delivered)."""
    started = time.monotonic()
    reported = started
    while time.monotonic() < started + _OUTBOX_WAIT:
        async with session.get(
            base + INVENTORY_DEVICES, params={"per_page": "1"}, headers=_bearer(admin)
        ) as response:
            have = int(response.headers.get("X-Total-Count", "0"))
        if have >= count:
            return
        if time.monotonic() - reported >= 15:
            reported = time.monotonic()
            print(f"  inventory has {have} of {count} devices", flush=True)
        await asyncio.sleep(0.2)
    raise RuntimeError("inventory did not receive every device in time")


async def run_gateway(
    name: str, devices_count: int, connections: int, work: Path, *, mongo_options: str = ""
) -> Run:
    """The whole stack, real devices polling through the gateway."""
    suffix = f", `{mongo_options}`" if mongo_options else ""
    run = Run(
        name,
        f"Through the gateway, {devices_count} real devices, {connections} connections{suffix}",
        devices_count,
        connections,
    )
    database = EmbeddedMongo(":memory:")
    database.start()
    stack = Stack(
        state_dir=work / f"stack-{name}",
        gateway_port=free_port(),
        mongo_url=_with_options(database.url, mongo_options),
        extra_env={f"{s}_LOG_LEVEL": "WARNING" for s in ("DEPLOYMENTS", "DEVICEAUTH", "GATEWAY")},
    )
    ops = OpCounter(database.url)
    try:
        stack.start()
        create_admin(stack, ADMIN)
        assert database.pid is not None
        pids = {**dict(sorted(stack.pids().items())), "database": database.pid}
        async with _session(connections) as session:
            login = {"Authorization": _basic(*ADMIN)}
            async with session.post(stack.url + LOGIN, headers=login) as response:
                admin = await response.text()
            started = time.monotonic()
            semaphore = asyncio.Semaphore(_REGISTER_CONCURRENCY)

            async def register(index: int) -> tuple[str, str]:
                async with semaphore:
                    return await register_device(session, stack.url, admin, index)

            # Devices join in batches, each provisioned in inventory before the next joins
            # (as a fleet that comes online over time): the outbox never holds more than a
            # batch, and the phases start on a quiet stack.
            registered: list[tuple[str, str]] = []
            for first in range(0, devices_count, _REGISTER_BATCH):
                batch = range(first, min(devices_count, first + _REGISTER_BATCH))
                registered += await asyncio.gather(*(register(i) for i in batch))
                await _registered_everywhere(session, stack.url, admin, len(registered))
            provisioned = time.monotonic() - started
            print(f"  {devices_count} devices registered in {provisioned:.0f} s", flush=True)
            run.setup = (
                f"Every built service and the gateway (`Stack`: {', '.join(stack.pids())}), "
                "one uvicorn worker each"
                + (f", their Mongo URL carrying `{mongo_options}`" if mongo_options else "")
                + ". The devices were preauthorized with Ed25519 keys and authenticated "
                f"through the gateway beforehand, {_REGISTER_CONCURRENCY} at a time in batches "
                f"of {_REGISTER_BATCH}, each batch provisioned in inventory by deviceauth's "
                f"outbox before the next ({devices_count} devices in {provisioned:.0f} s). "
                "Each request carries its device's own JWT, which the "
                "gateway verifies (signature with deviceauth's public key, token state from "
                "deviceauth, cached 3 s)."
            )
            await _drive(
                run,
                session,
                base=stack.url,
                user=_bearer(admin),
                tokens=dict(registered),
                artifact=_artifact(work),
                ops=ops,
                pids=pids,
            )
    except BaseException:
        _print_log_tails(stack.logs)
        raise
    finally:
        await ops.close()
        stack.stop()
        database.stop()
    return run


def _print_log_tails(logs: Path, lines: int = 20) -> None:
    """Show the end of every process log (the state directory is removed afterwards)."""
    for log in sorted(logs.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)


# --------------------------------------------------------------------------- report


def _unexpected(phase: Phase) -> str:
    if not phase.failures:
        return "0"
    # 0 stands for no response at all (connection error or the client's 120 s timeout).
    detail = ", ".join(f"{status or 'none'}: {n}" for status, n in phase.unexpected.items())
    return f"{phase.failures} ({detail})"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _report(runs: list[Run], load_before: str) -> str:
    lines = [
        "# Deployments benchmark results",
        "",
        "Written by `bench/deployments_bench.py`.",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- nproc: {os.cpu_count()}, python {platform.python_version()}",
        f"- load average before the runs: {load_before}; when written: {_load()}",
        "- the embedded Mongo-wire server (SecantusDB, in memory), local artifact storage;",
        "  the load generator (aiohttp, one keep-alive connection per concurrent client) runs",
        "  on the same 2 cores as the servers",
        "",
        "## Queries per request (asserted by `tests/deployments/test_store.py`)",
        "",
        "| request | queries | what |",
        "| --- | ---: | --- |",
        "| poll, nothing to do | 0 | no active deployment lists the device (the replica's"
        " snapshot of them, loaded with 1 query per tenant when a deployment appears) |",
        "| poll, nothing to do, listed | 3 | active device deployment, newest finished one,"
        " next deployment listing the device |",
        "| poll, first of a deployment | 7 | the 3 above, smallest compatible artifact, then"
        " one transaction: counter claim (`$inc` with room check), insert of the device"
        " deployment, commit |",
        "| poll, update under way | 1 | the active device deployment (it embeds its artifact) |",
        "| status report | 4 | device deployment, then one transaction: compare-and-set of its"
        " status, counter `$inc`, commit; +2 when the deployment status moves (twice per"
        " deployment at most), +1 upsert of the device's last status when it finishes |",
        "",
        "Every one of them is served by an index (the test checks each query plan). The runs",
        "below count the operations the database actually served in each phase (its `top`",
        "command, per database; commits are not in it) and divide by the requests of the",
        "phase.",
        "",
    ]
    for run in runs:
        databases = sorted({db for phase in run.phases for db in phase.ops})
        processes = list(run.phases[0].cpu) if run.phases else []
        lines += [f"## {run.title}", "", run.setup, ""]
        lines += [
            "| phase | requests | req/s | p50 ms | p99 ms | unexpected status | "
            + " | ".join(f"{db} ops/req" for db in databases)
            + " |",
            "| --- | ---: | ---: | ---: | ---: | ---: | "
            + " | ".join("---:" for _ in databases)
            + " |",
        ]
        for p in run.phases:
            ops = " | ".join(f"{p.ops.get(db, 0.0):.2f}" for db in databases)
            lines.append(
                f"| {p.label} | {p.requests} | {p.rps:,.0f} | {p.p50:.1f} | {p.p99:.1f} | "
                f"{_unexpected(p)} | {ops} |"
            )
        lines += [
            "",
            "CPU time (user + system) per request, ms, of each server process:",
            "",
            "| phase | " + " | ".join(processes) + " |",
            "| --- | " + " | ".join("---:" for _ in processes) + " |",
        ]
        for p in run.phases:
            lines.append(
                f"| {p.label} | " + " | ".join(f"{p.cpu[name]:.2f}" for name in processes) + " |"
            )
        failed = sum(sum(p.unexpected.values()) for p in run.phases)
        exact = run.stats.get("success") == run.devices and sum(run.stats.values()) == run.devices
        if failed:
            verdict = f"{failed:,} requests failed, so not every device got there"
        else:
            verdict = "exact" if exact else "NOT EXACT"
        lines += [
            "",
            f"Final statistics: success {run.stats.get('success')} of {run.devices} "
            f"({verdict}), all counters {run.stats}.",
            "",
        ]
    return "\n".join(lines)


async def _all(args: argparse.Namespace, work: Path) -> list[Run]:
    runs: list[Run] = []
    for name in args.runs:
        options = RETRY if name.endswith("-retry") else ""
        if name == "direct":
            runs.append(await run_direct(name, args.devices, args.connections, work))
        elif name.startswith("direct-high"):
            runs.append(
                await run_direct(
                    name, args.high_devices, args.high_connections, work, mongo_options=options
                )
            )
        else:
            runs.append(
                await run_gateway(
                    name, args.high_devices, args.high_connections, work, mongo_options=options
                )
            )
    return runs


def main() -> None:
    """Run the benchmark and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--high-devices", type=int, default=1500)
    parser.add_argument("--high-connections", type=int, default=300)
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="give up (stopping everything) after this"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "deployments.md"
    )
    args = parser.parse_args()

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM unwinds like Ctrl-C, so every process started is stopped either way.
    signal.signal(signal.SIGTERM, interrupt)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="fleetport-bench-") as tmp:
        runs = asyncio.run(asyncio.wait_for(_all(args, Path(tmp)), args.timeout))
    text = _report(runs, load_before)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
