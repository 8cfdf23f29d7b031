"""The fleet benchmark: a fleet's default traffic through the whole server, and its cost.

    uv run python bench/fleet_bench.py                                # 1,000 devices, ~15 min
    uv run python bench/fleet_bench.py --paced-seconds 60 --closed-seconds 30   # ~6 min
    uv run python bench/fleet_bench.py --devices 100000     # 99,000 of them seeded first

Starts the whole server as real processes (`Stack`: every service and the gateway, one
uvicorn worker each, on an embedded database kept on disk as `make run` keeps it), enrolls
`--driven` devices, a `--rsa-share` of them with RSA-2048 keys and the rest with Ed25519:
each is preauthorized through the management API, then authenticates through the gateway
with a signed auth request as the Mender client does, and reports its inventory and polls
once (a fleet that has been online before). A fleet of more `--devices` than that has the
rest seeded in bulk first (`fleet_seed.py`). The enrolled devices then send a `--mix` of
`POST /api/devices/v2/deployments/device/deployments/next` (nothing to do, 204), `PUT
/api/devices/v1/inventory/device/attributes` (15 attributes, one of which changes in one
report of ten) and token renewals (the device's signed auth request again), each request
from a device drawn at random with its current token. `mender` (the default) is what a
fleet on the Mender client's default intervals sends: 93.9 % polls, 5.9 % reports, 0.3 %
renewals; `heavy` is 80 %, 15 % and 5 %.

- **closed loop**: `--connections` requests in flight, each sent when the previous one is
  answered: the most the server does;
- **paced**: `--rate` requests/s for `--paced-seconds`, sent on schedule whether or not
  earlier ones are answered (open loop); a request's latency runs from its scheduled send
  time, so a server that falls behind is charged for the queueing.

The same-box limit runs the same schedules in the same run: `MinimalProxy` (from
`gateway_bench.py`, a raw-ASGI + aiohttp hop) in front of `Limit` below, a raw ASGI app that
verifies each request's device JWT (deviceauth's key, every time) and does one indexed
`find_one` in deviceauth's devices on the same database server.

Per run it reports requests/s, p50/p99/max latency overall and per kind of request, errors
by status, the CPU time per request of every process (the database, each service, the
gateway, the load generator), database operations per request, the RSS of every process
after enrollment and after each run, and the load average. Results go to
`bench/results/fleet.md`, in a section per `--label` (default: the fleet size).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments_bench import OpCounter  # noqa: E402
from devices import create_admin  # noqa: E402
from fleet_load import (  # noqa: E402
    ADMIN,
    EXPECTED,
    KINDS,
    MIXES,
    Device,
    Mix,
    Tally,
    closed_loop,
    enroll,
    new_devices,
    paced,
    percentiles,
)
from fleet_seed import seed  # noqa: E402
from gateway_bench import Fleet, _wait_http, serve_app  # noqa: E402
from procstats import cpu_seconds, machine, rss_kib  # noqa: E402
from sections import write_section  # noqa: E402

from common.core.tokens import TokenInvalid, TokenVerifier, load_signing_key  # noqa: E402
from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402
from common.localstack.launcher import DATABASE, Stack  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "fleet.md"
LOADGEN: Final = "load generator"


# --------------------------------------------------------------------------- the limit


class Limit:
    """The same-box limit's upstream: a raw ASGI app that verifies the request's device JWT
    with deviceauth's public key (no check remembered) and reads the device with one indexed
    `find_one` (`_id`) from deviceauth's devices collection; 204 when it exists."""

    def __init__(self, mongo_url: str, key_file: str) -> None:
        self.mongo_url = mongo_url
        self.verifier = TokenVerifier([load_signing_key(Path(key_file)).verifying()])
        self.client: AsyncMongoClient[dict[str, Any]] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.client = AsyncMongoClient(self.mongo_url)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert self.client is not None
                    await self.client.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.client is not None
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        status = 401
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        try:
            claims = self.verifier.verify(auth.removeprefix("Bearer "))
        except TokenInvalid:
            claims = None
        if claims is not None:
            devices = self.client["deviceauth"]["devices"]
            found = await devices.find_one({"_id": claims["sub"]}, projection={"_id": 1})
            status = 204 if found is not None else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _serve_limit(port: int, mongo_url: str, key_file: str) -> None:
    serve_app(Limit(mongo_url, key_file), port, lifespan="on")


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One measured run: what was sent, what came back, what every process spent."""

    name: str
    target: str
    tally: Tally
    cpu_s: dict[str, float]
    rss_kib: dict[str, int]
    db_ops: int
    load: str
    # CPU seconds so far, sampled once a second: (event loop time, per process, machine).
    samples: list[tuple[float, dict[str, float], float]] = field(default_factory=list)

    def errors(self) -> collections.Counter[str]:
        """Answers other than the expected one, by status (or transport error)."""
        found: collections.Counter[str] = collections.Counter()
        for (kind, status), count in self.tally.statuses.items():
            expected = 204 if self.target == LIMIT else EXPECTED[kind]
            if status != str(expected):
                found[f"{kind} {status}"] += count
        return found

    def errors_text(self) -> str:
        """The errors as `<kind> <status>: <count>`, or `none`."""
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.errors().items())) or "none"

    def cpu_ms(self, process: str) -> float:
        """CPU milliseconds per request of a process."""
        spent = self.cpu_s[process]
        return spent * 1000 / max(self.tally.requests, 1)

    def servers_cpu_ms(self) -> float:
        """CPU milliseconds per request of every server process together."""
        return sum(self.cpu_ms(p) for p in self.cpu_s if p != LOADGEN)


LIMIT: Final = "same-box limit"
_MIX_TEXT: Final = {
    "mender": "Mender's default intervals, 93.9 % idle `next`, 5.9 % inventory `PUT` (15 "
    "attributes), 0.3 % token renewal",
    "heavy": "80 % idle `next`, 15 % inventory `PUT` (15 attributes), 5 % token renewal",
}
FLEETPORT: Final = "Fleetport"


async def _db_ops(ops: OpCounter) -> int:
    """Database operations so far; asked again once if a long run let the connection drop."""
    try:
        return sum((await ops.counts()).values())
    except AutoReconnect:
        return sum((await ops.counts()).values())


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, the kernel)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def _sample(pids: dict[str, int], into: list[tuple[float, dict[str, float], float]]) -> None:
    """Every process's CPU seconds and the machine's, once a second, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        cpu = {process: cpu_seconds(pid) for process, pid in pids.items()}
        into.append((loop.time(), cpu, _machine_cpu_seconds()))
        await asyncio.sleep(1.0)


async def _measure(name: str, target: str, pids: dict[str, int], ops: OpCounter, load: Any) -> Run:
    """Run `load` (a coroutine giving a Tally) and what every process spent meanwhile."""
    cpu_before = {process: cpu_seconds(pid) for process, pid in pids.items()}
    ops_before = await _db_ops(ops)
    samples: list[tuple[float, dict[str, float], float]] = []
    sampler = asyncio.create_task(_sample(pids, samples))
    try:
        tally = await load
    finally:
        sampler.cancel()
    db_ops = await _db_ops(ops) - ops_before
    cpu = {process: cpu_seconds(pid) - cpu_before[process] for process, pid in pids.items()}
    rss = {p: rss_kib(pid) for p, pid in pids.items()}
    run = Run(name, target, tally, cpu, rss, db_ops, "", samples)
    run.load = _loadavg()
    p50, p99, top = percentiles(sorted(itertools.chain(*tally.latencies.values())))
    errors = run.errors_text()
    print(
        f"{name:<28} {target:<15} {tally.requests / tally.seconds:7,.0f} req/s  "
        f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {top:7.1f} ms  errors: {errors}  "
        f"load {run.load}",
        flush=True,
    )
    return run


async def drive(
    args: argparse.Namespace,
    stack: Stack,
    database: EmbeddedMongo,
    limit_url: str,
    pids: dict[str, int],
    devices: list[Device],
) -> tuple[list[Run], dict[str, int]]:
    """The measured runs, each target with the same seeded mix; and the RSS before them."""
    ops = OpCounter(database.url)
    try:
        rss_before = {process: rss_kib(pid) for process, pid in pids.items()}
        await closed_loop(limit_url, Mix(devices, 0, args.mix), args.connections, 2, limit=True)
        runs = []
        closed = f"closed loop, {args.connections} in flight"
        for target, url in ((LIMIT, limit_url), (FLEETPORT, stack.url)):
            load = closed_loop(
                url,
                Mix(devices, 1, args.mix),
                args.connections,
                args.closed_seconds,
                limit=url == limit_url,
            )
            runs.append(await _measure(closed, target, pids, ops, load))
        rated = f"paced {args.rate:g} req/s"
        for target, url, seconds in (
            (FLEETPORT, stack.url, args.paced_seconds),
            (LIMIT, limit_url, args.limit_paced_seconds),
        ):
            load = paced(url, Mix(devices, 2, args.mix), args.rate, seconds, limit=url == limit_url)
            runs.append(await _measure(rated, target, pids, ops, load))
    finally:
        await ops.close()
    return runs, rss_before


# --------------------------------------------------------------------------- report


def _ms(values: list[float]) -> str:
    p50, p99, top = percentiles(sorted(values))
    return f"{p50:,.1f} / {p99:,.1f} / {top:,.0f}"


def _busiest(runs: list[Run], count: int = 6) -> list[str]:
    """The server processes that spent the most CPU over the runs, busiest first."""
    spent: collections.Counter[str] = collections.Counter()
    for run in runs:
        spent.update({p: s for p, s in run.cpu_s.items() if p != LOADGEN})
    return [process for process, _ in spent.most_common(count)]


def _slowest_seconds(run: Run, busiest: list[str], count: int = 5) -> list[str]:
    """Table rows of the run's seconds with the highest p99 (by when requests were sent),
    with what each busy process and the rest of the machine spent in that second."""
    seconds = sorted(
        run.tally.by_second.items(),
        key=lambda item: percentiles(sorted(item[1]))[1],
        reverse=True,
    )[:count]
    rows = []
    for second, latencies in sorted(seconds):
        p50, p99, top = percentiles(sorted(latencies))
        start = run.tally.started + second
        pairs = zip(run.samples, run.samples[1:], strict=False)
        spans = [(a, b) for a, b in pairs if a[0] <= start + 0.5 < b[0]]
        cells = ["" for _ in (*busiest, LOADGEN, "rest")]
        if spans:
            (t0, cpu0, machine0), (t1, cpu1, machine1) = spans[0]
            share = {p: (cpu1[p] - cpu0[p]) / (t1 - t0) for p in cpu0}
            ours = sum(share.values())
            rest = max(0.0, (machine1 - machine0) / (t1 - t0) - ours)
            cells = [f"{share.get(p, 0.0) * 100:.0f}" for p in (*busiest, LOADGEN)]
            cells.append(f"{rest * 100:.0f}")
        rows.append(
            f"| {run.target} | {second} | {len(latencies):,} | {p50:,.1f} | {p99:,.1f} | "
            f"{top:,.0f} | " + " | ".join(cells) + " |"
        )
    return rows


def report(
    args: argparse.Namespace,
    devices: list[Device],
    seconds: tuple[float, float],
    provisioned: str,
    runs: list[Run],
    rss_before: dict[str, int],
    load_before: str,
) -> str:
    """The markdown section of this run."""
    rsa = sum(1 for d in devices if isinstance(d.key, RSAPrivateKey))
    command = " ".join(["bench/fleet_bench.py", *sys.argv[1:]])
    seeded_s, enrolled_s = seconds
    seeded = args.devices - len(devices)
    lines = [
        f"## {args.label}",
        "",
        f"Written by `{command}`. "
        + (
            f"{seeded:,} devices seeded in bulk (`fleet_seed.py`) in {seeded_s:,.0f} s, then "
            if seeded
            else ""
        )
        + f"{len(devices):,} devices ({rsa:,} RSA-2048, "
        f"{len(devices) - rsa:,} Ed25519) preauthorized and authenticated through the API, "
        f"{args.enroll_concurrency} at a time: {enrolled_s:,.0f} s "
        f"({len(devices) / enrolled_s:,.1f} authentications/s); {provisioned}; each device "
        "then reported its inventory and polled once. These send the load. "
        f"Mix: {_MIX_TEXT[args.mix]}; devices drawn at random. The same-box limit: "
        "`MinimalProxy` in front of `Limit` (device "
        "JWT verified, one indexed `find_one`), every request answered 204; while it runs, "
        "the idle Fleetport processes' background work still counts in their rows and the "
        "database's.",
        "",
        *machine(),
        f"- load average before the runs: {load_before}",
        "",
        "| run | target | requests | req/s | p50 ms | p99 ms | max ms | errors | "
        "DB ops/req | load avg after |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for run in runs:
        t = run.tally
        p50, p99, top = percentiles(sorted(itertools.chain(*t.latencies.values())))
        errors = run.errors_text()
        lines.append(
            f"| {run.name} | {run.target} | {t.requests:,} | {t.requests / t.seconds:,.0f} | "
            f"{p50:,.1f} | {p99:,.1f} | {top:,.0f} | {errors} | "
            f"{run.db_ops / max(t.requests, 1):.2f} | {run.load} |"
        )
    lines += [
        "",
        "Latency by kind of request, p50 / p99 / max ms:",
        "",
        "| run | target | " + " | ".join(KINDS) + " |",
        "| --- | --- |" + " ---: |" * len(KINDS),
    ]
    for run in runs:
        cells = " | ".join(_ms(run.tally.latencies[kind]) for kind in KINDS)
        lines.append(f"| {run.name} | {run.target} | {cells} |")
    paced_runs = [run for run in runs if run.name.startswith("paced")]
    busiest = _busiest(paced_runs)
    lines += [
        "",
        "The slowest seconds of the paced runs (by the p99 of the requests scheduled in "
        "them), and the CPU each busy process spent in that second, % of one core (`rest`: "
        "everything else on the machine):",
        "",
        "| target | second | requests | p50 ms | p99 ms | max ms | "
        + " | ".join((*busiest, LOADGEN, "rest"))
        + " |",
        "| --- |" + " ---: |" * (len(busiest) + 7),
        *(row for run in paced_runs for row in _slowest_seconds(run, busiest)),
    ]
    processes = list(rss_before)
    heads = " | ".join(f"{run.name}, {run.target}" for run in runs)
    lines += [
        "",
        "CPU time (user + system) per request, ms, of every process during each run (the "
        "load generator shares the machine):",
        "",
        f"| process | {heads} |",
        "| --- |" + " ---: |" * len(runs),
    ]
    for process in processes:
        cells = " | ".join(f"{run.cpu_ms(process):.3f}" for run in runs)
        lines.append(f"| {process} | {cells} |")
    totals = " | ".join(f"{run.servers_cpu_ms():.3f}" for run in runs)
    lines += [
        f"| **all servers** | {totals} |",
        "",
        "RSS (MiB) after enrollment and after each run:",
        "",
        f"| process | after enrollment | {heads} |",
        "| --- | ---: |" + " ---: |" * len(runs),
    ]
    for process in processes:
        cells = " | ".join(f"{run.rss_kib[process] / 1024:,.1f}" for run in runs)
        lines.append(f"| {process} | {rss_before[process] / 1024:,.1f} | {cells} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="the fleet's size")
    parser.add_argument(
        "--driven",
        type=int,
        default=1000,
        help="devices enrolled through the API, which send "
        "the load; the rest of the fleet is seeded (`fleet_seed.py`)",
    )
    parser.add_argument("--rsa-share", type=float, default=0.5, help="of devices with RSA keys")
    parser.add_argument("--enroll-concurrency", type=int, default=16)
    parser.add_argument(
        "--provision-wait",
        type=float,
        default=120.0,
        help="seconds to wait for inventory to hear of the enrolled devices",
    )
    parser.add_argument(
        "--mix", choices=sorted(MIXES), default="mender", help="the requests' mix (`fleet_load.py`)"
    )
    parser.add_argument("--connections", type=int, default=64, help="closed loop in flight")
    parser.add_argument("--closed-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=600.0, help="paced requests/s")
    parser.add_argument("--paced-seconds", type=float, default=300.0)
    parser.add_argument("--limit-paced-seconds", type=float, default=60.0)
    parser.add_argument("--label", default="", help="the report's section (default: fleet size)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve-limit", help="run the limit's upstream (used internally)")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--mongo-url", required=True)
    serve.add_argument("--key-file", required=True)
    args = parser.parse_args()
    args.label = args.label or f"{args.devices:,} devices"
    return args


def main() -> None:
    """Run the benchmark and record it (or, with `serve-limit`, the limit's upstream)."""
    args = _arguments()
    if args.command == "serve-limit":
        _serve_limit(args.port, args.mongo_url, args.key_file)
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM unwinds like Ctrl-C, so every process started is stopped either way.
    signal.signal(signal.SIGTERM, interrupt)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as work:
        database = EmbeddedMongo(Path(work) / "db", log=Path(work) / "database.log")
        stack = Stack(
            state_dir=Path(work) / "stack",
            gateway_port=free_port(),
            mongo_url=database.url,
            extra_env={f"{s}_LOG_LEVEL": "WARNING" for s in ("DEPLOYMENTS", "DEVICEAUTH")},
        )
        servers = Fleet()
        try:
            database.start()
            stack.start()
            create_admin(stack, ADMIN)
            driven = min(args.driven, args.devices)
            seeded_s = 0.0
            if args.devices > driven:
                indices = range(driven, args.devices)
                inventory = stack.addrs["inventory"]
                seeded_s = asyncio.run(seed(database.url, inventory, indices, args.rsa_share))
                print(f"{len(indices)} devices seeded in {seeded_s:.0f} s", flush=True)
            started = time.monotonic()
            devices = new_devices(driven, args.rsa_share)
            print(f"{len(devices)} keys in {time.monotonic() - started:.0f} s", flush=True)
            enrolled_s, provisioned = asyncio.run(
                enroll(
                    stack.url, devices, args.enroll_concurrency, args.devices, args.provision_wait
                )
            )
            print(f"{len(devices)} devices enrolled in {enrolled_s:.0f} s", flush=True)
            port = free_port()
            key_file = stack.state_dir / "keys" / "deviceauth.pem"
            argv = [sys.executable, __file__, "serve-limit", "--port", str(port)]
            argv += ["--mongo-url", database.url, "--key-file", str(key_file)]
            limit = servers.start("limit", argv, {}, port)
            proxy = servers.serve("minproxy", limit.url)
            _wait_http(limit.url)
            _wait_http(proxy.url)
            assert database.pid is not None
            pids = {
                DATABASE: database.pid,
                **stack.pids(),
                "limit (raw ASGI)": limit.pid,
                "limit (minimal proxy)": proxy.pid,
                LOADGEN: os.getpid(),
            }
            load_before = _loadavg()
            runs, rss_before = asyncio.run(drive(args, stack, database, proxy.url, pids, devices))
        except BaseException:
            for log in sorted((Path(work) / "stack" / "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-5:]
                print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            servers.stop()
            stack.stop()
            database.stop()
    section = report(
        args, devices, (seeded_s, enrolled_s), provisioned, runs, rss_before, load_before
    )
    write_section(args.output, "Fleet benchmark results", f"fleet {args.label}", section)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
