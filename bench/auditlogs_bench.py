"""What auditlogs costs: recording events, and exporting a large trail as CSV in flat memory.

    uv run python bench/auditlogs_bench.py                  # 100,000 events (~2 min)
    uv run python bench/auditlogs_bench.py --events 20000   # a shorter trial

One auditlogs process (`python -m services.auditlogs`, one uvicorn worker on 127.0.0.1) on
the embedded database (its own process, syncing each commit to disk as in production),
called directly with well-formed unsigned user tokens (behind the gateway, services only
decode them):

- `ingest`: `--ingest` events posted one by one to the internal API, as the peers' outbox
  relays deliver them (each with its `Idempotency-Key`): the service's and the database's
  CPU time per event;
- `export`: the trail is filled to `--events` events (written straight into the database in
  the shape the service stores, which is much faster than posting them), then exported with
  `GET /api/management/v1/auditlogs/logs/export`, read as it streams. The service's resident
  memory (`VmRSS`) is read before, every 20 ms during (the peak) and after the export; the
  CSV is checked (one row per event, after the header). The same for a page of the listing.

Results go to `bench/results/auditlogs.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
from pymongo import AsyncMongoClient

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import unsigned_token  # noqa: E402
from procstats import cpu_seconds, machine, rss_kib  # noqa: E402

from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "auditlogs.md"
INGEST: Final = "/api/internal/v1/auditlogs/tenants//logs"
EXPORT: Final = "/api/management/v1/auditlogs/logs/export"
LOGS: Final = "/api/management/v1/auditlogs/logs"
USER_AUTH: Final = {
    "Authorization": f"Bearer {unsigned_token({'sub': 'bench', 'mender.user': True})}"
}
_FILL_BATCH: Final = 5000


def _event(n: int, at: datetime) -> dict[str, Any]:
    """An event as a peer sends it: a user's change to a device, a deployment or a user."""
    kind = ("device", "deployment", "user")[n % 3]
    target: dict[str, Any] = {"id": f"object-{n % 997:04d}", "type": kind}
    if kind == "deployment":
        target["deployment"] = {"name": f"rollout-{n % 50}", "artifact_name": "app-1.0"}
    elif kind == "user":
        target["user"] = {"email": f"user{n % 97}@example.com"}
    return {
        "actor": {"id": f"user-{n % 20}", "type": "user", "email": f"op{n % 20}@example.com"},
        "action": ("create", "update", "delete", "accept")[n % 4],
        "object": target,
        "change": f"change number {n}: {'x' * (n % 40)}",
        "meta": {"request_id": [str(uuid.UUID(int=n))]},
        "time": at.isoformat().replace("+00:00", "Z"),
    }


def _stored(event: dict[str, Any], n: int, at: datetime, expire: datetime) -> dict[str, Any]:
    """The document the service stores for an event (its wire shape, tenant and expiry)."""
    return {**event, "_id": f"bench-{n}", "tenant_id": "", "time": at, "expire_ts": expire}


async def _fill(url: str, count: int, start: datetime) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
    try:
        logs = client["auditlogs"]["logs"]
        expire = start + timedelta(days=90)
        for first in range(0, count, _FILL_BATCH):
            docs = []
            for n in range(first, min(first + _FILL_BATCH, count)):
                at = start + timedelta(milliseconds=n)
                docs.append(_stored(_event(n, at), n, at, expire))
            await logs.insert_many(docs, ordered=False)
            print(f"  fill: {first + len(docs)}/{count}", flush=True)
    finally:
        await client.close()


class _RssSampler:
    """Samples a process's resident memory while a block runs; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kib(self._pid))
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> _RssSampler:
        self.peak = rss_kib(self._pid)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, rss_kib(self._pid))


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start an auditlogs process, its output going to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.auditlogs"], env=env, stdout=out, stderr=out
        )


async def _export(session: aiohttp.ClientSession, base: str) -> tuple[int, int]:
    """Read the whole export as it streams; (rows after the header, bytes)."""
    rows, size = 0, 0
    async with session.get(base + EXPORT, headers=USER_AUTH) as response:
        if response.status != 200:
            raise RuntimeError(f"export: {response.status} {await response.text()}")
        async for line in response.content:
            rows += 1
            size += len(line)
    return rows - 1, size


async def run(args: argparse.Namespace, work: Path) -> list[str]:
    """Start the processes, run the phases, return the report's lines."""
    database = EmbeddedMongo(work / "db", log=work / "db.log")
    database.start()
    port = free_port()
    env = {
        **os.environ,
        "AUDITLOGS_MONGO_URL": database.url,
        "AUDITLOGS_LISTEN_PORT": str(port),
        "AUDITLOGS_DEV_MODE": "true",
        "AUDITLOGS_LOG_LEVEL": "WARNING",
    }
    service = _spawn(env, work / "auditlogs.log")
    base = f"http://127.0.0.1:{port}"
    assert database.pid is not None
    start = datetime.now(UTC) - timedelta(days=1)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(base + "/api/internal/v1/auditlogs/alive") as r:
                        if r.status == 204:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            ingest_cpu = (cpu_seconds(service.pid), cpu_seconds(database.pid))
            ingest_wall = time.monotonic()
            for n in range(args.ingest):
                key = {"Idempotency-Key": f"ingest-{n}"}
                event = _event(n, datetime.now(UTC))
                async with session.post(base + INGEST, json=event, headers=key) as response:
                    if response.status != 201:
                        raise RuntimeError(f"event {n}: {response.status} {await response.text()}")
            ingest_wall = time.monotonic() - ingest_wall
            ingest_service = cpu_seconds(service.pid) - ingest_cpu[0]
            ingest_database = cpu_seconds(database.pid) - ingest_cpu[1]

            await _fill(database.url, args.events - args.ingest, start)
            rss_before = rss_kib(service.pid)
            cpu_before = cpu_seconds(service.pid)
            wall = time.monotonic()
            async with _RssSampler(service.pid) as sampler:
                rows, size = await _export(session, base)
            wall = time.monotonic() - wall
            export_cpu = cpu_seconds(service.pid) - cpu_before
            await asyncio.sleep(1)
            rss_after = rss_kib(service.pid)
            if rows != args.events:
                raise RuntimeError(f"export: {rows} rows, {args.events} events")
            async with _RssSampler(service.pid) as page_sampler:
                middle = {"per_page": 500, "page": max(1, args.events // 1000)}
                async with session.get(base + LOGS, params=middle, headers=USER_AUTH) as response:
                    page = await response.json()
                    total = response.headers["X-Total-Count"]
            if len(page) != 500 or int(total) != args.events:
                raise RuntimeError(f"listing: {len(page)} events of {total}")
    finally:
        service.terminate()
        service.wait(10)
        database.stop()

    def mib(kib: int) -> str:
        return f"{kib / 1024:.1f} MiB"

    return [
        "# auditlogs",
        "",
        f"`uv run python bench/auditlogs_bench.py --events {args.events} --ingest {args.ingest}`",
        "",
        *machine(),
        "",
        "## Recording events",
        "",
        "| events | wall | service CPU / event | database CPU / event |",
        "| --- | --- | --- | --- |",
        f"| {args.ingest}, one request each | {ingest_wall:.1f} s "
        f"| {ingest_service / args.ingest * 1000:.2f} ms "
        f"| {ingest_database / args.ingest * 1000:.2f} ms |",
        "",
        f"## CSV export of {args.events:,} events",
        "",
        "| rows | CSV | wall | service CPU | RSS before | RSS peak | RSS after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {rows:,} | {size / 1024 / 1024:.1f} MiB | {wall:.1f} s | {export_cpu:.1f} s "
        f"({export_cpu / rows * 1e6:.0f} µs a row) | {mib(rss_before)} "
        f"| {mib(sampler.peak)} | {mib(rss_after)} |",
        "",
        f"Listing a page of 500 events in the middle (`X-Total-Count: {total}`): RSS peak "
        f"{mib(page_sampler.peak)}.",
    ]


def main() -> None:
    """Parse the options, run the benchmark, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the trail")
    parser.add_argument("--ingest", type=int, default=1000, help="events posted one by one")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditlogs-bench-") as tmp:
        lines = asyncio.run(run(args, Path(tmp)))
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
