"""What devicemonitor's telemetry costs: ingest CPU per sample, and the downsampled range
query over a day of per-second samples.

    uv run python bench/devicemonitor_bench.py                 # a day, as below (~1.5 min)
    uv run python bench/devicemonitor_bench.py --hours 2       # a shorter trial

One devicemonitor process (`python -m services.devicemonitor`, one uvicorn worker on
127.0.0.1) on the embedded database (its own process, syncing each commit to disk as in
production), called directly with well-formed unsigned device and user tokens (behind the
gateway, services only decode them). One device:

- `single`: `--single` samples, one request each, one a second of sample time (an agent
  posting every second); the CPU time of the service and of the database per sample;
- `batched`: `--hours` of per-second samples (86,400 for a day) posted `--batch` at a time
  (an agent that reports once a minute what it sampled every second); CPU per sample;
- `query`: the range over the whole time with the default bucket (5 minutes for a day,
  about 300 points), for one metric and for every metric of the device (7), `--queries`
  times each: latency (median, p95) and the service's and database's CPU per query. The
  bounds are on the five-minute grid, so the five-minute statistics are read; once more
  with bounds a minute inside, which reads the per-minute statistics. Every answer is
  checked: its buckets count exactly the samples in the range.

Every sample carries two sensors, CPU total and two cores, memory used and total: seven
metrics, as in the tests. Results go to `bench/results/devicemonitor.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
from pymongo import AsyncMongoClient

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import unsigned_token  # noqa: E402
from procstats import cpu_seconds, machine  # noqa: E402

from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "devicemonitor.md"
TELEMETRY: Final = "/api/devices/v1/devicemonitor/telemetry"
RANGE: Final = "/api/management/v1/devicemonitor/devices/{}/telemetry"
DEVICE: Final = "bench-device-0001"


DEVICE_AUTH: Final = {
    "Authorization": f"Bearer {unsigned_token({'sub': DEVICE, 'mender.device': True})}"
}
USER_AUTH: Final = {
    "Authorization": f"Bearer {unsigned_token({'sub': 'bench', 'mender.user': True})}"
}


_MINUTE: Final = timedelta(minutes=1)


def _z(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _sample(at: datetime, i: int) -> dict[str, Any]:
    cpu = 20 + (i % 600) / 10
    return {
        "timestamp": _z(at),
        "hwmon": {
            "temperature": [{"name": "CPU", "value": 40 + (i % 97) / 4, "unit": "Celsius"}],
            "voltage": [{"name": "12V", "value": 11.8 + (i % 7) / 100, "unit": "Volt"}],
        },
        "cpu": {"total": cpu, "cores": [cpu - 1, cpu + 1]},
        "memory": {"used": 500_000_000 + i, "total": 1_000_000_000},
    }


class Meter:
    """CPU seconds of the service and of the database across a phase."""

    def __init__(self, service: int, database: int) -> None:
        self._pids = (service, database)
        self._start = (0.0, 0.0)

    def __enter__(self) -> Meter:
        self._start = (cpu_seconds(self._pids[0]), cpu_seconds(self._pids[1]))
        self.wall = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.monotonic() - self.wall
        self.service = cpu_seconds(self._pids[0]) - self._start[0]
        self.database = cpu_seconds(self._pids[1]) - self._start[1]


async def _post_all(
    session: aiohttp.ClientSession, base: str, bodies: list[Any], progress: Callable[[int], None]
) -> None:
    for n, body in enumerate(bodies, 1):
        async with session.post(base + TELEMETRY, json=body, headers=DEVICE_AUTH) as response:
            if response.status != 204:
                raise RuntimeError(f"report {n}: {response.status} {await response.text()}")
        progress(n)


async def _query(
    session: aiohttp.ClientSession, base: str, params: list[tuple[str, str]]
) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with session.get(base + RANGE.format(DEVICE), params=params, headers=USER_AUTH) as r:
        body: dict[str, Any] = await r.json()
        if r.status != 200:
            raise RuntimeError(f"range: {r.status} {body}")
    return time.perf_counter() - started, body


def _progress(label: str, total: int) -> Callable[[int], None]:
    step = max(1, total // 10)

    def report(n: int) -> None:
        if n % step == 0 or n == total:
            print(f"  {label}: {n}/{total}", flush=True)

    return report


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a devicemonitor process, its output going to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.devicemonitor"], env=env, stdout=out, stderr=out
        )


async def _hour_documents(url: str) -> int:
    """How many hour documents the device's telemetry takes."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        return await client["devicemonitor"]["samples"].count_documents({"device_id": DEVICE})
    finally:
        await client.close()


async def run(args: argparse.Namespace, work: Path) -> list[str]:
    """Start the processes, run the phases, return the report's lines."""
    database = EmbeddedMongo(work / "db", log=work / "db.log")
    database.start()
    port = free_port()
    env = {
        **os.environ,
        "DEVICEMONITOR_MONGO_URL": database.url,
        "DEVICEMONITOR_LISTEN_PORT": str(port),
        "DEVICEMONITOR_DEV_MODE": "true",
        "DEVICEMONITOR_LOG_LEVEL": "WARNING",
    }
    service = _spawn(env, work / "devicemonitor.log")
    base = f"http://127.0.0.1:{port}"
    total = args.hours * 3600
    # The day ends on the five-minute grid, in the past as a device's samples would be.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    end = now - timedelta(minutes=5 + now.minute % 5)
    sent = total + args.single
    start = end - timedelta(seconds=sent)
    assert database.pid is not None
    lines: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(base + "/api/internal/v1/devicemonitor/alive") as r:
                        if r.status == 204:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            single = [_sample(start + timedelta(seconds=i), i) for i in range(args.single)]
            with Meter(service.pid, database.pid) as one:
                await _post_all(session, base, single, _progress("single", len(single)))
            offset = args.single
            batches = [
                [
                    _sample(start + timedelta(seconds=offset + i), offset + i)
                    for i in range(b, min(b + args.batch, total))
                ]
                for b in range(0, total, args.batch)
            ]
            with Meter(service.pid, database.pid) as batched:
                await _post_all(session, base, batches, _progress("batched", len(batches)))
            bounds = [("from", _z(start)), ("to", _z(end))]
            inside = [("from", _z(start + _MINUTE)), ("to", _z(end - _MINUTE))]
            queries: dict[str, tuple[list[float], Meter, dict[str, Any]]] = {}
            for label, params, expected in (
                ("one metric (cpu/total)", [*bounds, ("metric", "cpu/total")], sent),
                ("every metric (7)", bounds, sent),
                (
                    "one metric, bounds off the 5-minute grid",
                    [*inside, ("metric", "cpu/total"), ("bucket", "300")],
                    sent - 120,
                ),
            ):
                latencies = []
                body: dict[str, Any] = {}
                with Meter(service.pid, database.pid) as meter:
                    for _ in range(args.queries):
                        latency, body = await _query(session, base, params)
                        latencies.append(latency)
                counted = sum(p["n"] for p in body["series"][0]["points"])
                if counted != expected:
                    raise RuntimeError(f"{label}: {counted} samples counted, {expected} sent")
                queries[label] = (latencies, meter, body)
        hours = await _hour_documents(database.url)
    finally:
        service.terminate()
        service.wait(10)
        database.stop()

    def per(seconds: float, count: int) -> str:
        return f"{seconds / count * 1000:.2f} ms"

    lines += [
        "# devicemonitor telemetry",
        "",
        "`uv run python bench/devicemonitor_bench.py "
        f"--hours {args.hours} --single {args.single} --batch {args.batch} "
        f"--queries {args.queries}`",
        "",
        *machine(),
        "",
        "## Ingest",
        "",
        "| phase | samples | requests | wall | service CPU / sample | database CPU / sample |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| one sample a request | {args.single} | {args.single} | {one.wall:.1f} s "
        f"| {per(one.service, args.single)} | {per(one.database, args.single)} |",
        f"| {args.batch} samples a request | {total} | {len(batches)} | {batched.wall:.1f} s "
        f"| {per(batched.service, total)} | {per(batched.database, total)} |",
        "",
        f"Stored: {hours} hour documents for {total + args.single} samples.",
        "",
        f"## Range query over {args.hours} h of per-second samples",
        "",
        "| metrics | points a series | median | p95 | service CPU / query | database CPU / query |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, (latencies, meter, body) in queries.items():
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        lines.append(
            f"| {label} | {len(body['series'][0]['points'])} (bucket {body['bucket']} s) "
            f"| {statistics.median(latencies) * 1000:.1f} ms | {p95 * 1000:.1f} ms "
            f"| {per(meter.service, args.queries)} | {per(meter.database, args.queries)} |"
        )
    return lines


def main() -> None:
    """Parse the options, run the benchmark, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24, help="hours of per-second samples")
    parser.add_argument("--single", type=int, default=600, help="samples posted one by one")
    parser.add_argument("--batch", type=int, default=60, help="samples a batched request")
    parser.add_argument("--queries", type=int, default=30, help="range queries of each kind")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="devicemonitor-bench-") as tmp:
        lines = asyncio.run(run(args, Path(tmp)))
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
