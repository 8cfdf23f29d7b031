"""The device hot path: an idle `POST …/deployments/next` through the gateway, and its cost.

    uv run python bench/token_bench.py                 # ~2 min
    uv run python bench/token_bench.py --label before  # names the run in the report

Starts the whole stack as real processes (`Stack`: the embedded database, every service,
the gateway; one uvicorn worker each), registers devices (preauthorized, then
authenticated with a signed request), then sends idle polls,
`POST /api/devices/v2/deployments/device/deployments/next` answered 204, each with the JWT
of one of the devices in turn, to two targets in the same run:

- **through the gateway**, which checks the token and proxies the request to deployments;
- **deployments, direct**: the same requests straight to deployments (which decodes tokens
  without checking them): the same machine's limit without a gateway in front.

For each it reports requests/s and the CPU time (user + system) that the gateway,
deviceauth, deployments and the database spent per request: unlike requests/s, that hardly
depends on what else the machine is doing (the load generator runs in this process and
competes for the same cores). The result is written into `bench/results/gateway.md`, in
the section of its label, so a run of the previous code (`--label before`, from a checkout
of it) and of this one sit side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import create_admin, register_device  # noqa: E402
from procstats import cpu_seconds, machine  # noqa: E402
from sections import write_section  # noqa: E402

from common.localstack.embedded import free_port  # noqa: E402
from common.localstack.launcher import DATABASE, Stack  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "gateway.md"
NEXT: Final = "/api/devices/v2/deployments/device/deployments/next"
POLL: Final = b'{"device_provides": {"device_type": "bench", "artifact_name": "bench-1"}}'
LOGIN: Final = "/api/management/v1/useradm/auth/login"
ADMIN: Final = ("bench@example.com", "correct-horse-battery")
# The processes whose CPU is counted, as `Stack.pids()` names them.
MEASURED: Final = ("gateway", "deviceauth", "deployments", DATABASE)


@dataclass
class Result:
    """One target: requests served, how fast, and the CPU each process spent per request."""

    target: str
    requests: int
    seconds: float
    errors: int
    cpu_us: dict[str, float]

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


async def _register(stack: Stack, count: int) -> list[str]:
    async with aiohttp.ClientSession() as session:
        basic = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        async with session.post(
            stack.url + LOGIN, headers={"Authorization": f"Basic {basic}"}
        ) as response:
            admin = await response.text()
        return [(await register_device(session, stack.url, admin, i))[1] for i in range(count)]


async def idle_polls(
    url: str, tokens: list[str], connections: int, seconds: float
) -> tuple[list[float], int]:
    """Idle polls for `seconds`; (latency in ms of each 204, count of other answers)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.monotonic() < deadline:
                headers = {
                    "Authorization": f"Bearer {tokens[i % len(tokens)]}",
                    "Content-Type": "application/json",
                }
                i += connections
                started = time.perf_counter()
                async with session.post(url + NEXT, data=POLL, headers=headers) as response:
                    await response.read()
                if response.status == 204:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        await asyncio.gather(*(worker(c) for c in range(connections)))
    return latencies, errors


def _measure(
    stack: Stack, target: str, url: str, tokens: list[str], connections: int, seconds: float
) -> Result:
    asyncio.run(idle_polls(url, tokens, connections, 1.0))  # warm-up
    pids = {name: pid for name, pid in stack.pids().items() if name in MEASURED}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    latencies, errors = asyncio.run(idle_polls(url, tokens, connections, seconds))
    done = len(latencies)
    elapsed = time.monotonic() - started
    cpu = {
        name: (cpu_seconds(pid) - before[name]) / max(done, 1) * 1e6 for name, pid in pids.items()
    }
    result = Result(target, done, elapsed, errors, cpu)
    print(
        f"{target:<24} {result.rps:8,.0f} req/s  errors {errors}  "
        + "  ".join(f"{n} {v:,.0f}" for n, v in cpu.items())
        + "  (CPU µs/req)",
        flush=True,
    )
    return result


def _report(label: str, results: list[Result], devices: int, connections: int, cold: bool) -> str:
    lines = [
        f"### Device hot path: idle `POST …/deployments/next` ({label})",
        "",
        f"Written by `bench/token_bench.py --label {label}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {devices} devices, "
        f"{connections} connections, each request with one device's JWT in turn, after "
        "unmeasured load that lets registration's after-effects settle"
        + (
            "; no token check remembered between requests (`--cold`)."
            if cold
            else "; token checks remembered as the gateway does by default."
        ),
        "",
        *machine(),
        "",
        "| target | req/s | gateway CPU µs/req | deviceauth | deployments | database | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        cells = [f"{r.cpu_us.get(name, 0.0):,.0f}" for name in MEASURED]
        lines.append(f"| {r.target} | {r.rps:,.0f} | {' | '.join(cells)} | {r.errors} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark and record it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="the report's section name")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=20.0, help="unmeasured load first")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no token remembered between requests, as when each of a large fleet's tokens "
        "comes once per poll interval",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="token-bench-") as work:
        stack = Stack(
            state_dir=Path(work),
            gateway_port=free_port(),
            extra_env={
                f"{s}_LOG_LEVEL": "WARNING" for s in ("DEPLOYMENTS", "DEVICEAUTH", "GATEWAY")
            },
        )
        stack.start()
        try:
            create_admin(stack, ADMIN)
            tokens = asyncio.run(_register(stack, args.devices))
            # What registering set off (provisioning through the outboxes, first check-ins)
            # finishes before anything is measured.
            asyncio.run(idle_polls(stack.url, tokens, args.connections, args.settle))
            results = [
                _measure(stack, name, url, tokens, args.connections, args.seconds)
                for name, url in (
                    ("through the gateway", stack.url),
                    ("deployments, direct", stack.addrs["deployments"]),
                )
            ]
        finally:
            stack.stop()
    section = _report(args.label, results, args.devices, args.connections, args.cold)
    write_section(RESULTS, "Gateway benchmark results", f"token-bench {args.label}", section)
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
