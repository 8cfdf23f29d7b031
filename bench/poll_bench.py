"""The idle poll through the gateway against the same machine's limit, in one run.

    uv run python bench/poll_bench.py                  # ~3 min
    uv run python bench/poll_bench.py --label before   # names the run in the report

Starts the whole stack as real processes (`Stack`: the embedded database, every service,
the gateway; one uvicorn worker each), registers `--devices` devices (preauthorized, then
authenticated with a signed request: real Ed25519 keys, real device JWTs), then sends idle
polls, `POST /api/devices/v2/deployments/device/deployments/next` answered 204, each with
the JWT of one of the devices in turn, with `--connections` requests in flight, to:

- **Fleetport**: the gateway, which checks the token and proxies to deployments;
- **the limit**: what a poll cannot cost much less than on this machine, as `fleet_bench.py`
  runs it: a bare raw-ASGI + aiohttp proxy hop (`MinimalProxy` of `gateway_bench.py`) in
  front of a raw ASGI app (`Limit` of `fleet_bench.py`) that verifies the device JWT's
  signature with deviceauth's public key and does one indexed `find_one` (the device by
  `_id` in deviceauth's database) on the same database server.

The two alternate for `--rounds` runs of `--seconds` each. For each it reports requests/s
(median of the runs), p50 and p99 latency (over all requests), and the CPU time (user +
system) that each process spent per request, the database included: unlike requests/s,
that hardly depends on what else the machine is doing (the load generator runs in this
process and competes for the same cores). The result is written into
`bench/results/poll.md`, in the section of its label, so a run of other code (`--label
before`, from a checkout of it) sits beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import create_admin  # noqa: E402
from gateway_bench import Fleet, _wait_http  # noqa: E402
from procstats import cpu_seconds, machine  # noqa: E402
from sections import write_section  # noqa: E402
from token_bench import ADMIN, _register, idle_polls  # noqa: E402

from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402
from common.localstack.launcher import Stack  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "poll.md"
FLEET_BENCH: Final = ROOT / "bench" / "fleet_bench.py"


@dataclass
class Target:
    """One target's runs: requests/s of each, every latency, the CPU of its processes."""

    name: str
    url: str
    pids: dict[str, int]
    rps: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)

    def quantile(self, q: float) -> float:
        """A latency quantile in ms, over every request of every run."""
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    def cpu_us(self, name: str) -> float:
        """CPU µs per request of one process, over every run."""
        return self.cpu_s.get(name, 0.0) / max(len(self.latencies_ms), 1) * 1e6


def _run(target: Target, tokens: list[str], connections: int, seconds: float) -> None:
    before = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    started = time.monotonic()
    latencies, errors = asyncio.run(idle_polls(target.url, tokens, connections, seconds))
    elapsed = time.monotonic() - started
    for name, pid in target.pids.items():
        target.cpu_s[name] = target.cpu_s.get(name, 0.0) + cpu_seconds(pid) - before[name]
    target.rps.append(len(latencies) / elapsed)
    target.latencies_ms += latencies
    target.errors += errors
    print(f"{target.name:<10} {len(latencies) / elapsed:8,.0f} req/s  errors {errors}", flush=True)


def _idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU ms per second each process spends with no requests (background loops)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds * 1e3 for name, pid in pids.items()}


def _report(
    label: str, targets: list[Target], idle: dict[str, float], args: argparse.Namespace
) -> str:
    fleetport, limit = targets
    names = sorted({n for t in targets for n in t.pids})
    lines = [
        f"### Idle `POST …/deployments/next` through the gateway and the limit ({label})",
        "",
        f"Written by `bench/poll_bench.py --label {label}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.devices} devices with "
        f"Ed25519 keys, {args.connections} requests in flight, {args.rounds} alternating runs "
        f"of {args.seconds:g} s per target, each request with one device's JWT in turn.",
        "",
        *machine(),
        "",
        "| target | req/s (median) | p50 ms | p99 ms | errors | "
        + " | ".join(f"{n} CPU µs/req" for n in names)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for t in targets:
        cells = [f"{t.cpu_us(n):,.0f}" if n in t.pids else "" for n in names]
        lines.append(
            f"| {t.name} | {statistics.median(t.rps):,.0f} | {t.quantile(0.5):,.1f} | "
            f"{t.quantile(0.99):,.1f} | {t.errors} | {' | '.join(cells)} |"
        )
    ratio = statistics.median(fleetport.rps) / statistics.median(limit.rps)
    p99 = fleetport.quantile(0.99) / limit.quantile(0.99)
    lines += [
        "",
        "With no requests, over "
        f"{args.seconds:g} s before the runs, CPU ms per second: "
        + ", ".join(f"{n} {v:,.1f}" for n, v in sorted(idle.items()))
        + ". The whole stack runs during both targets' runs, so its background work on the "
        "database is in both targets' database column.",
        "",
        f"Fleetport / limit: throughput {ratio:.2f}x, p99 {p99:.2f}x; "
        f"runs (req/s): Fleetport {', '.join(f'{r:,.0f}' for r in fleetport.rps)}; "
        f"limit {', '.join(f'{r:,.0f}' for r in limit.rps)}.",
    ]
    return "\n".join(lines) + "\n"


def _bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="poll-bench-") as work:
        database = EmbeddedMongo(Path(work) / "db")
        database.start()
        stack = Stack(
            state_dir=Path(work),
            gateway_port=free_port(),
            mongo_url=database.url,
            extra_env={
                f"{s}_LOG_LEVEL": "WARNING" for s in ("DEPLOYMENTS", "DEVICEAUTH", "GATEWAY")
            },
        )
        fleet = Fleet()
        stack.start()
        try:
            create_admin(stack, ADMIN)
            tokens = asyncio.run(_register(stack, args.devices))
            key = str(Path(work) / "keys" / "deviceauth.pem")
            port = free_port()
            argv = [sys.executable, str(FLEET_BENCH), "serve-limit", "--port", str(port)]
            argv += ["--mongo-url", database.url, "--key-file", key]
            app = fleet.start("limit app", argv, {}, port)
            proxy = fleet.serve("minproxy", app.url)
            for proc in (app, proxy):
                _wait_http(proc.url, timeout=120)
            pids = stack.pids()
            assert database.pid is not None
            db = {"database": database.pid}
            targets = [
                Target(
                    "Fleetport",
                    stack.url,
                    {"gateway": pids["gateway"], "deployments": pids["deployments"], **db},
                ),
                Target("limit", proxy.url, {"proxy": proxy.pid, "limit app": app.pid, **db}),
            ]
            # What registering set off (provisioning through the outboxes, first check-ins)
            # finishes, and every process is warm, before anything is measured.
            for target in targets:
                asyncio.run(idle_polls(target.url, tokens, args.connections, args.settle))
            idle = _idle_cpu({n: p for t in targets for n, p in t.pids.items()}, args.seconds)
            for _ in range(args.rounds):
                for target in targets:
                    _run(target, tokens, args.connections, args.seconds)
        finally:
            fleet.stop()
            stack.stop()
            database.stop()
    section = _report(args.label, targets, idle, args)
    write_section(RESULTS, "Idle poll against the limit", f"poll-bench {args.label}", section)
    print(f"written to {RESULTS}")


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="the report's section name")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0, help="unmeasured load first")
    _bench(parser.parse_args())


if __name__ == "__main__":
    main()
