"""What enrolling devices costs: preauthorized devices' first auth requests through the gateway.

    uv run python bench/enrollment_bench.py --label after                 # 1,000 and 100,000
    uv run python bench/enrollment_bench.py --label before --fleet 1000 --enroll 200

Each cell (`--fleet`, one per value; `--keys`, one per key type) runs on fresh processes: a
fresh embedded Mongo-wire server kept on disk and the whole stack
(`common.localstack.launcher.Stack`: every service and the gateway, one uvicorn worker each).

1. The existing fleet is seeded straight into the databases in bulk by `fleet_seed.py`
   (enrolling 100,000 devices through the API would take hours before the enrollment path
   was fast): accepted devices and auth sets in deviceauth, laid out by its store, and
   their inventory documents (half of them with RSA-2048 keys). Seeded devices send
   nothing.
2. `--enroll` fresh devices (RSA-2048 or Ed25519 keys, generated beforehand) are
   preauthorized through the management API, and the run waits until deviceauth's outbox
   has delivered everything, so that enrollment starts on a quiet stack.
3. Every fresh device sends its signed auth request through the gateway once,
   `--concurrency` at a time; each must be answered 200 with a token (preauthorized devices
   are accepted on their first request). Measured: auth requests/s over the phase, p50 and
   p99 latency, the CPU time per auth of every server process (database included) and the
   database operations per auth (the server's `top` command, per database), both counted
   from the first request until inventory shows every device accepted; and for each device
   the delay from its 200 until inventory's document for it says `accepted` (read directly
   from inventory's database every 0.5 s; those reads are left out of the counts, not out of
   the database's CPU time).

Results go to `--output` (default `bench/results/enrollment.md`) as a section named by
`--label` (`sections.py`), replacing a section of the same label, so runs of other code sit
beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pymongo import AsyncMongoClient

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments_bench import OpCounter  # noqa: E402
from devices import create_admin  # noqa: E402
from fleet_seed import seed  # noqa: E402
from procstats import cpu_seconds, machine  # noqa: E402
from sections import write_section  # noqa: E402

from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402
from common.localstack.launcher import Stack  # noqa: E402
from tests.toolkit.devices import (  # noqa: E402
    AUTH_REQUESTS,
    device_id_of,
    public_key_pem,
    signed_auth_request,
)

PREAUTHORIZE: Final = "/api/management/v2/devauth/devices"
LOGIN: Final = "/api/management/v1/useradm/auth/login"
ADMIN: Final = ("bench@example.com", "enrollment-bench-1")
_PREAUTH_CONCURRENCY: Final = 16
_QUIET_WAIT: Final = 900.0
_INVENTORY_WAIT: Final = 300.0
# How often inventory is read for the devices not yet seen accepted (its cost lands on the
# database's CPU time, so not more often than the delays need).
_WATCH_EVERY: Final = 0.5
_STATUS_KEY: Final = "identity-status"


# --------------------------------------------------------------------------- devices


def _new_key(kind: str) -> bytes:
    """A new private key in PKCS#8 PEM (run in worker processes: RSA takes a while)."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class FreshDevice:
    """A device to enroll: its identity, key, and the signed auth request it sends."""

    index: int
    identity: dict[str, str]
    pubkey: str
    body: bytes
    headers: dict[str, str]
    device_id: str = ""
    answered: float = 0.0


def _fresh_device(index: int, pem: bytes) -> FreshDevice:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
    # Numbered after the seeded fleet, with a MAC of their own.
    identity = {"mac": f"0a:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}:01"}
    body, headers = signed_auth_request(key, identity)
    return FreshDevice(index, identity, public_key_pem(key), body, headers)


def make_devices(kind: str, count: int, first: int) -> list[FreshDevice]:
    """`count` devices with new keys, numbered from `first` (after the seeded fleet)."""
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        pems = list(pool.map(_new_key, [kind] * count, chunksize=16))
    return [_fresh_device(first + i, pem) for i, pem in enumerate(pems)]


# --------------------------------------------------------------------------- seeding


# --------------------------------------------------------------------------- measuring


async def op_counts(url: str) -> dict[str, int]:
    """Operations served so far, per database (the server's `top` command).

    A client of its own each time: the server closes connections idle for 5 minutes, which
    the wait for inventory can exceed."""
    counter = OpCounter(url)
    try:
        return await counter.counts()
    finally:
        await counter.close()


class InventoryWatch:
    """Notes when inventory first shows each device accepted (reads its database directly)."""

    def __init__(self, url: str) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        self._coll = self._client["inventory"]["devices"]
        self.seen: dict[str, float] = {}
        self.queries = 0

    async def watch(self, devices: Sequence[FreshDevice], done: asyncio.Event) -> None:
        """Poll every `_WATCH_EVERY` s for the answered devices not yet seen accepted."""
        while True:
            waiting = [d.device_id for d in devices if d.device_id and d.device_id not in self.seen]
            if waiting:
                self.queries += 1
                cursor = self._coll.find(
                    {"_id": {"$in": waiting}}, {f"attributes.{_STATUS_KEY}.value": 1}
                )
                now = time.monotonic()
                async for doc in cursor:
                    status = doc.get("attributes", {}).get(_STATUS_KEY, {}).get("value")
                    if status == "accepted":
                        self.seen[doc["_id"]] = now
            elif done.is_set():
                return
            await asyncio.sleep(_WATCH_EVERY)

    async def close(self) -> None:
        """Release the client."""
        await self._client.close()


@dataclass
class Cell:
    """One measured enrollment: a fleet size and a key type."""

    fleet: int
    keys: str
    enrolled: int
    concurrency: int
    seeded_s: float = 0.0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: dict[int, int] = field(default_factory=dict)
    # Per enrolled device, over the enrollment phase ("enroll") and from its start until
    # inventory showed every device accepted ("all").
    cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    ops: dict[str, dict[str, float]] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    missing: int = 0

    @property
    def rate(self) -> float:
        """Auth requests answered per second over the phase."""
        return len(self.latencies) / self.wall_s if self.wall_s else 0.0


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _login(session: aiohttp.ClientSession, base: str) -> str:
    basic = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    async with session.post(base + LOGIN, headers={"Authorization": f"Basic {basic}"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"login answered {resp.status}")
        return await resp.text()


async def _preauthorize(
    session: aiohttp.ClientSession, base: str, admin: str, devices: Sequence[FreshDevice]
) -> None:
    semaphore = asyncio.Semaphore(_PREAUTH_CONCURRENCY)

    async def one(device: FreshDevice) -> None:
        async with (
            semaphore,
            session.post(
                base + PREAUTHORIZE,
                json={"identity_data": device.identity, "pubkey": device.pubkey},
                headers={"Authorization": f"Bearer {admin}"},
            ) as response,
        ):
            if response.status != 201:
                raise RuntimeError(f"preauthorize answered {response.status}")

    await asyncio.gather(*(one(d) for d in devices))


async def _quiet(url: str) -> None:
    """Wait until deviceauth's outbox holds nothing pending."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        deadline = time.monotonic() + _QUIET_WAIT
        while await client["deviceauth"]["outbox"].count_documents({"state": "pending"}):
            if time.monotonic() > deadline:
                raise RuntimeError("deviceauth's outbox did not drain")
            await asyncio.sleep(0.5)
    finally:
        await client.close()


async def _enroll(
    session: aiohttp.ClientSession, base: str, devices: Sequence[FreshDevice], cell: Cell
) -> None:
    queue: asyncio.Queue[FreshDevice] = asyncio.Queue()
    for device in devices:
        queue.put_nowait(device)

    async def worker() -> None:
        while not queue.empty():
            device = queue.get_nowait()
            started = time.monotonic()
            async with session.post(
                base + AUTH_REQUESTS, data=device.body, headers=device.headers
            ) as response:
                text = await response.text()
            if response.status != 200:
                cell.failures[response.status] = cell.failures.get(response.status, 0) + 1
                continue
            device.answered = time.monotonic()
            cell.latencies.append((device.answered - started) * 1000)
            device.device_id = device_id_of(text)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(cell.concurrency)))
    cell.wall_s = time.monotonic() - started


async def run_cell(
    fleet: int, keys: str, enroll: int, concurrency: int, work: Path, logs: Path | None = None
) -> Cell:
    """Seed `fleet` devices, then enroll `enroll` fresh ones and measure."""
    cell = Cell(fleet, keys, enroll, concurrency)
    print(f"cell: fleet {fleet}, {keys} keys, {enroll} to enroll", flush=True)
    devices = make_devices(keys, enroll, first=fleet)
    # On disk, as `make run` keeps it: the in-memory server's cache fills up with a fleet
    # of 100,000 (its inserts then fail).
    database = EmbeddedMongo(work / f"db-{fleet}-{keys}")
    database.start()
    stack = Stack(
        state_dir=work / f"stack-{fleet}-{keys}",
        gateway_port=free_port(),
        mongo_url=database.url,
        extra_env={f"{s}_LOG_LEVEL": "WARNING" for s in ("DEPLOYMENTS", "DEVICEAUTH", "GATEWAY")},
    )
    watch = InventoryWatch(database.url)
    try:
        stack.start()
        create_admin(stack, ADMIN)
        if fleet:
            cell.seeded_s = await seed(database.url, stack.addrs["inventory"], range(fleet), 0.5)
        print(f"  seeded {fleet} devices in {cell.seeded_s:.0f} s", flush=True)
        assert database.pid is not None
        pids = {**dict(sorted(stack.pids().items())), "database": database.pid}
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            admin = await _login(session, stack.url)
            await _preauthorize(session, stack.url, admin, devices)
            await _quiet(database.url)
            ops_start = await op_counts(database.url)
            cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
            done = asyncio.Event()
            watcher = asyncio.create_task(watch.watch(devices, done))
            await _enroll(session, stack.url, devices, cell)
            cpu_enrolled = {name: cpu_seconds(pid) for name, pid in pids.items()}
            ops_enrolled = await op_counts(database.url)
            polls_enrolled = watch.queries
            done.set()
            try:
                await asyncio.wait_for(watcher, _INVENTORY_WAIT)
            except TimeoutError:
                print("  inventory did not show every device accepted in time", flush=True)
            cpu_end = {name: cpu_seconds(pid) for name, pid in pids.items()}
            ops_end = await op_counts(database.url)
        answered = [d for d in devices if d.device_id]
        cell.delays = [
            watch.seen[d.device_id] - d.answered for d in answered if d.device_id in watch.seen
        ]
        cell.missing = len(answered) - len(cell.delays)
        count = max(1, len(answered))
        ops_enrolled["inventory"] = ops_enrolled.get("inventory", 0) - polls_enrolled
        ops_end["inventory"] = ops_end.get("inventory", 0) - watch.queries
        for window, cpu, ops in (("enroll", cpu_enrolled, ops_enrolled), ("all", cpu_end, ops_end)):
            cell.cpu_ms[window] = {n: (cpu[n] - cpu_start[n]) * 1000 / count for n in pids}
            cell.ops[window] = {
                db: (ops[db] - ops_start.get(db, 0)) / count
                for db in sorted(ops)
                if ops[db] - ops_start.get(db, 0) > 0
            }
        print(
            f"  {cell.rate:.1f} auth/s, p50 {_quantile(cell.latencies, 0.5):.0f} ms, "
            f"inventory p99 {_quantile(cell.delays, 0.99):.2f} s",
            flush=True,
        )
    except BaseException:
        for log in sorted(stack.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-20:]
            print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        await watch.close()
        stack.stop()
        database.stop()
        if logs is not None:
            shutil.copytree(stack.logs, logs / f"{fleet}-{keys}", dirs_exist_ok=True)
    return cell


# --------------------------------------------------------------------------- report


def _section(label: str, cells: Sequence[Cell], load_before: str) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"## {label}",
        "",
        *machine(),
        f"- load average before the cells: {load_before}; after: {load}",
        "",
        "| fleet | keys | enrolled | in flight | auth/s | p50 ms | p99 ms | not 200 |"
        " inventory p50 s | p99 s | max s | not seen |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        failures = sum(c.failures.values())
        detail = f" ({', '.join(f'{s}: {n}' for s, n in c.failures.items())})" if failures else ""
        lines.append(
            f"| {c.fleet:,} | {c.keys} | {c.enrolled} | {c.concurrency} | {c.rate:.1f} | "
            f"{_quantile(c.latencies, 0.5):.0f} | {_quantile(c.latencies, 0.99):.0f} | "
            f"{failures}{detail} | {_quantile(c.delays, 0.5):.2f} | "
            f"{_quantile(c.delays, 0.99):.2f} | {max(c.delays, default=float('nan')):.2f} | "
            f"{c.missing} |"
        )
    processes = list(cells[0].cpu_ms["enroll"]) if cells else []
    databases = sorted({db for c in cells for w in c.ops.values() for db in w})
    for window, what in (
        ("enroll", "over the enrollment phase (first request to last answer)"),
        ("all", "from the first request until inventory showed every device accepted"),
    ):
        lines += [
            "",
            f"CPU time (user + system) per enrolled device, ms, {what}:",
            "",
            "| fleet | keys | " + " | ".join(processes) + " |",
            "| ---: | --- | " + " | ".join("---:" for _ in processes) + " |",
        ]
        for c in cells:
            cpu = " | ".join(f"{c.cpu_ms[window].get(p, 0.0):.1f}" for p in processes)
            lines.append(f"| {c.fleet:,} | {c.keys} | {cpu} |")
        lines += [
            "",
            f"Database operations per enrolled device, {what} (the server's `top`; commits",
            "are not in it):",
            "",
            "| fleet | keys | " + " | ".join(databases) + " |",
            "| ---: | --- | " + " | ".join("---:" for _ in databases) + " |",
        ]
        for c in cells:
            counts = " | ".join(f"{c.ops[window].get(db, 0.0):.1f}" for db in databases)
            lines.append(f"| {c.fleet:,} | {c.keys} | {counts} |")
    seeded = ", ".join(f"{c.fleet:,} in {c.seeded_s:.0f} s" for c in cells)
    lines += ["", f"Fleet seeding (not measured): {seeded}.", ""]
    return "\n".join(lines)


async def _all(args: argparse.Namespace, work: Path, load_before: str) -> None:
    cells: list[Cell] = []
    for fleet in args.fleet:
        for keys in args.keys:
            cells.append(
                await run_cell(fleet, keys, args.enroll, args.concurrency, work, args.logs)
            )
            # Written after each cell, so a later one that fails loses nothing.
            section = _section(args.label, cells, load_before)
            write_section(args.output, "Enrollment benchmark results", args.label, section)
            print(f"wrote {args.output}", flush=True)


def main() -> None:
    """Run the cells asked for and write their section of the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", required=True, help="the section of the results file")
    parser.add_argument("--fleet", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--keys", nargs="+", choices=("rsa", "ed25519"), default=["rsa", "ed25519"])
    parser.add_argument("--enroll", type=int, default=1000, help="fresh devices per cell")
    parser.add_argument("--concurrency", type=int, default=64, help="auth requests in flight")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/enrollment.md")
    parser.add_argument("--logs", type=Path, help="keep every process log of each cell here")
    args = parser.parse_args()

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM unwinds like Ctrl-C, so every process started is stopped either way.
    signal.signal(signal.SIGTERM, interrupt)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="enrollment-bench-") as work:
        asyncio.run(_all(args, Path(work), load_before))


if __name__ == "__main__":
    main()
