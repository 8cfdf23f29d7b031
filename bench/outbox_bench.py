"""How fast deviceauth's outbox delivers enrollment effects into inventory.

    uv run python bench/outbox_bench.py                       # 100,000 effects, then 50/s
    uv run python bench/outbox_bench.py --effects 20000 --rate 50 --seconds 30

`python -m services.inventory` (one uvicorn worker) over the embedded Mongo-wire server on
disk, as `make run` starts them; the relay runs in this process on deviceauth's database of
the same server, as it runs inside deviceauth. Each enrolled device leaves two effects for
inventory, as deviceauth writes them when a preauthorized device first authenticates: its
identity scope (`PATCH .../device/{id}/attribute/scope/identity`) and its status
(`POST .../devices/status/accepted`, merged across devices). The other peers are not
deployed here (as in `make run` without them): their effects are not written.

Two phases:

- drain: a backlog of `--effects` effects (e.g. after an inventory outage) is written,
  then delivered; effects/s, CPU ms per effect of the relay (this process), inventory and
  the database, and database operations per effect;
- lag: effects of `--rate` enrollments/s are written for `--seconds`, paced, with the
  relay running and woken after each write as deviceauth does; for each device, the time
  from its effects' commit to inventory holding it with status `accepted` (looked for
  every 0.25 s).

Writes `bench/results/outbox.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import httpx
from pymongo import AsyncMongoClient

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments_bench import OpCounter, _load  # noqa: E402
from procstats import cpu_seconds, machine  # noqa: E402

from common.core.outbox import (  # noqa: E402
    COLLECTION,
    OUTBOX_INDEXES,
    Effect,
    Outbox,
    OutboxRelay,
)
from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402
from services.deviceauth.clients.effects import (  # noqa: E402
    INVENTORY,
    inventory_identity,
    status_effects,
)

RESULTS: Final = ROOT / "bench" / "results" / "outbox.md"
# A peer that accepts everything at once: what delivering costs the relay and its database.
_NULL_PEER: Final = """
import sys
from aiohttp import web

async def accept(request):
    await request.read()
    return web.Response(status=204)

app = web.Application()
app.router.add_route("*", "/{tail:.*}", accept)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""
_FILL: Final = 2000  # effects written per insert while building the backlog


def _enrollment(device_id: str) -> list[Effect]:
    """What deviceauth queues for inventory when a preauthorized device first authenticates."""
    identity = {"mac": f"02:00:{device_id[-8:]}", "sku": "bench-device"}
    effects = [inventory_identity("", device_id, identity)]
    effects += status_effects("", device_id, status="accepted", revision=2)
    return [e for e in effects if e.peer == INVENTORY]


@dataclass
class Drain:
    peer: str
    effects: int
    seconds: float
    cpu_ms: dict[str, float]  # process → CPU ms per effect
    ops: dict[str, float]  # database → operations per effect
    in_inventory: int


@dataclass
class Lag:
    devices: int
    seconds: float
    lags: list[float]
    cpu_ms: dict[str, float]


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    found = {name: cpu_seconds(pid) for name, pid in pids.items()}
    found["relay (this process)"] = time.process_time()
    return found


def _per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    return {name: (after[name] - before[name]) * 1000 / max(count, 1) for name in before}


async def _accepted(inventory: Any, device_ids: list[str]) -> set[str]:
    """Which of the devices inventory holds as accepted: one read of their `_id` span (a
    long `$in` would cost the embedded database more than the deliveries measured)."""
    span = {"$gte": min(device_ids), "$lte": max(device_ids)}
    query = {"_id": span, "attributes.identity-status.value": "accepted"}
    return {d["_id"] async for d in inventory.devices.find(query, {"_id": 1})}


async def _drain(
    peer: str,
    db: Any,
    inventory: Any,
    relay: OutboxRelay,
    effects: int,
    pids: dict[str, int],
    ops: OpCounter,
) -> Drain:
    outbox = Outbox(db, {INVENTORY})
    devices = [f"drain-{peer}-{n:07d}" for n in range(effects // 2)]
    batch: list[Effect] = []
    for device in devices:
        batch += _enrollment(device)
        if len(batch) >= _FILL:
            await outbox.add(batch)
            batch = []
    if batch:
        await outbox.add(batch)
    queued = await db.outbox.count_documents({"state": "pending"})
    print(f"drain: {queued} effects queued", flush=True)
    cpu, count, start = _cpu(pids), await ops.counts(), time.monotonic()
    while await relay.deliver_due():
        pass
    seconds = time.monotonic() - start
    await relay.release()  # the next phase's relay delivers to the same peer name
    cpu_ms, done = _per(cpu, _cpu(pids), queued), await ops.counts()
    left = await db.outbox.count_documents({})
    assert left == 0, f"{left} effects left undelivered"
    in_inventory = len(await _accepted(inventory, devices))
    print(f"drain ({peer}): {queued} in {seconds:.1f}s ({queued / seconds:.0f}/s)", flush=True)
    per_db = {name: (done[name] - count.get(name, 0)) / queued for name in done}
    return Drain(peer, queued, seconds, cpu_ms, per_db, in_inventory)


async def _lag(
    db: Any, inventory: Any, relay: OutboxRelay, rate: float, seconds: float, pids: dict[str, int]
) -> Lag:
    outbox = Outbox(db, {INVENTORY})
    committed: dict[str, float] = {}
    seen: dict[str, float] = {}
    total = int(rate * seconds)
    writing = True

    async def write() -> None:
        start = time.monotonic()
        for n in range(total):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            device = f"lag-{n:07d}"
            await outbox.add(_enrollment(device))
            committed[device] = time.monotonic()
            relay.wake()

    async def watch() -> None:
        while writing or len(seen) < len(committed):
            waiting = [d for d in committed if d not in seen]
            if waiting:
                found = await _accepted(inventory, waiting)
                now = time.monotonic()
                seen.update((d, now) for d in found)
            await asyncio.sleep(0.25)

    cpu = _cpu(pids)
    async with relay.running():
        watcher = asyncio.create_task(watch())
        await write()
        writing = False
        await asyncio.wait_for(watcher, 1800)
    lags = sorted(seen[d] - committed[d] for d in committed)
    print(f"lag: {total} devices, p50 {lags[len(lags) // 2]:.2f}s, max {lags[-1]:.2f}s", flush=True)
    return Lag(total, seconds, lags, _per(cpu, _cpu(pids), total * 2))


async def _wait_healthy(url: str, within: float = 300.0) -> None:
    """Wait for a service to answer its health check (slow to start on a busy machine)."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 204:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy")


async def _process(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, *args),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def run(args: argparse.Namespace, work: Path) -> tuple[list[Drain], Lag]:
    """Start the database, a null peer and inventory; run the phases."""
    database = EmbeddedMongo(work / "db")
    database.start()
    port, null_port = free_port(), free_port()
    env = {
        **os.environ,
        "INVENTORY_LISTEN_PORT": str(port),
        "INVENTORY_MONGO_URL": database.url,
        "INVENTORY_DEV_MODE": "true",
        "INVENTORY_LOG_LEVEL": "WARNING",
    }
    service = await _process("-m", "services.inventory", env=env)
    null_peer = await _process("-c", _NULL_PEER, str(null_port))
    base = f"http://127.0.0.1:{port}"
    client: AsyncMongoClient[Any] = AsyncMongoClient(database.url, tz_aware=True)
    ops = OpCounter(database.url)
    try:
        assert database.pid is not None
        await _wait_healthy(base + "/api/internal/v1/inventory/health")
        db, inventory = client["deviceauth"], client["inventory"]
        # deviceauth creates its outbox's index at start; the relay reads the queue by it.
        await db[COLLECTION].create_indexes(OUTBOX_INDEXES[COLLECTION])
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
        ) as http:

            def relay(url: str) -> OutboxRelay:
                return OutboxRelay(db, http, {INVENTORY: url}, concurrency=args.concurrency)

            null_pids = {"null peer": null_peer.pid, "database": database.pid}
            pids = {"inventory": service.pid, "database": database.pid}
            null_url = f"http://127.0.0.1:{null_port}"
            drains = [
                await _drain(
                    "null", db, inventory, relay(null_url), args.null_effects, null_pids, ops
                ),
                await _drain("inventory", db, inventory, relay(base), args.effects, pids, ops),
            ]
            lag = await _lag(db, inventory, relay(base), args.rate, args.seconds, pids)
    finally:
        await ops.close()
        await client.close()
        await _stop(service)
        await _stop(null_peer)
        database.stop()
    return drains, lag


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def _markdown(drains: list[Drain], lag: Lag, args: argparse.Namespace, load: str) -> str:
    lines = [
        "# Outbox delivery benchmark results",
        "",
        "Written by `bench/outbox_bench.py` "
        f"(`--null-effects {args.null_effects} --effects {args.effects} "
        f"--rate {args.rate:g} --seconds {args.seconds:g} "
        f"--concurrency {args.concurrency}`).",
        "",
        *machine(),
        f"- load average before the run: {load} (1, 5, 15 min)",
        "",
        "## Drain of a backlog",
        "",
        "Into a null peer (answers 204 at once: the relay's and the outbox's own cost) and "
        "into inventory (every effect applied):",
        "",
        "| peer | effects | seconds | effects/s | devices in inventory after |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {d.peer} | {d.effects:,} | {d.seconds:.1f} | **{d.effects / d.seconds:,.0f}** "
            f"| {d.in_inventory:,} |"
            for d in drains
        ),
        "",
        "CPU ms per effect, and database operations per effect (per database):",
        "",
        "| peer | "
        + " | ".join(name for name in drains[1].cpu_ms)
        + " | null peer | database operations |",
        "| --- |" + " ---: |" * (len(drains[1].cpu_ms) + 2),
        *(
            f"| {d.peer} | "
            + " | ".join(f"{d.cpu_ms.get(name, 0):.3f}" for name in drains[1].cpu_ms)
            + f" | {d.cpu_ms.get('null peer', 0):.3f} | "
            + ", ".join(f"{db} {n:.2f}" for db, n in sorted(d.ops.items()))
            + " |"
            for d in drains
        ),
        "",
        "## Delivery lag at a steady enrollment rate",
        "",
        f"{lag.devices:,} devices at {lag.devices / lag.seconds:g}/s for {lag.seconds:g} s; "
        "from the commit of a device's effects to inventory holding it as accepted:",
        "",
        "| p50 | p90 | p99 | max | mean |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {_quantile(lag.lags, 0.5):.2f} s | {_quantile(lag.lags, 0.9):.2f} s "
        f"| {_quantile(lag.lags, 0.99):.2f} s | {lag.lags[-1]:.2f} s "
        f"| {statistics.fmean(lag.lags):.2f} s |",
        "",
        "| process | CPU ms per effect |",
        "| --- | ---: |",
        *(f"| {name} | {ms:.3f} |" for name, ms in lag.cpu_ms.items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the bench and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-effects", type=int, default=100_000)
    parser.add_argument("--effects", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=50.0, help="enrollments per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    load = _load()
    with tempfile.TemporaryDirectory() as work:
        drains, lag = asyncio.run(run(args, Path(work)))
    args.output.write_text(_markdown(drains, lag, args, load))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
