"""What TLS at the gateway costs: the gateway's CPU per request over HTTPS against HTTP.

    uv run python bench/gateway_tls_bench.py              # ~1 min

The gateway (`python -m gateway`) runs in front of `gateway_bench.py`'s stub upstream and
issuer, once plain and once with a self-signed P-256 certificate (what compose generates
for a first run). A fixed number of requests go through it, from an aiohttp client in this
process, in two shapes:

- kept alive: 8 connections, each carrying many requests (devices and the web UI keep theirs);
- a new connection per request: the TLS handshake is paid every time (the worst case).

The gateway's CPU seconds (user + system, from /proc) over the run, divided by the requests,
is the figure: wall-clock rates are noisy on a shared machine, CPU per request is not.
Results are written to `bench/results/gateway_tls.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway_bench import BENCH_PATH, Fleet, _gateway_env, _issuer_key, _token, _wait_http  # noqa: E402
from procstats import cpu_seconds, machine  # noqa: E402

from common.core.certificates import ensure_self_signed  # noqa: E402
from common.localstack.embedded import free_port  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "gateway_tls.md"
CONNECTIONS: Final = 8


@dataclass
class Measured:
    """One cell: requests made, all answered 200, and the gateway's CPU over them."""

    requests: int
    ok: int
    cpu: float

    @property
    def cpu_ms(self) -> float:
        """The gateway's CPU milliseconds per request."""
        return 1000 * self.cpu / self.requests


async def _drive(
    url: str, token: str, requests: int, *, keep_alive: bool, context: ssl.SSLContext
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    ok = 0

    async def worker(count: int) -> None:
        nonlocal ok
        connector = aiohttp.TCPConnector(ssl=context, force_close=not keep_alive)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(count):
                async with session.get(url + BENCH_PATH, headers=headers) as response:
                    await response.read()
                    ok += response.status == 200

    share = requests // CONNECTIONS
    await asyncio.gather(*(worker(share) for _ in range(CONNECTIONS)))
    return ok


async def _ready(url: str, context: ssl.SSLContext) -> None:
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(300):
            try:
                async with session.get(url + "/status") as response:
                    if response.status == 204:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in time")


def _measure(
    fleet: Fleet,
    env: dict[str, str],
    scheme: str,
    token: str,
    requests: int,
    context: ssl.SSLContext,
) -> dict[bool, Measured]:
    port = free_port()
    gateway = fleet.start(
        f"gateway-{scheme}", [sys.executable, "-m", "gateway"], _gateway_env(port) | env, port
    )
    url = f"{scheme}://127.0.0.1:{port}"
    asyncio.run(_ready(url, context))
    cells = {}
    for keep_alive in (True, False):
        asyncio.run(_drive(url, token, CONNECTIONS * 10, keep_alive=keep_alive, context=context))
        before = cpu_seconds(gateway.pid)
        ok = asyncio.run(_drive(url, token, requests, keep_alive=keep_alive, context=context))
        cells[keep_alive] = Measured(requests, ok, cpu_seconds(gateway.pid) - before)
    gateway.popen.terminate()
    gateway.popen.wait(10)
    return cells


def main() -> int:
    """Measure and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per cell")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    fleet = Fleet()
    try:
        upstream = fleet.serve("upstream")
        key_file = _issuer_key()
        issuer = fleet.serve("issuer", str(key_file))
        _wait_http(upstream.url + BENCH_PATH)
        _wait_http(issuer.url + "/calls")
        addrs = {"inventory": upstream.url, "deviceauth": issuer.url}
        token = _token(key_file)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            ensure_self_signed(cert, key, ["127.0.0.1"])
            context = ssl.create_default_context(cafile=str(cert))
            base = {f"GATEWAY_{n.upper()}_ADDR": a for n, a in addrs.items()}
            tls = {"GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(key)}
            results = {
                "http": _measure(fleet, base, "http", token, args.requests, context),
                "https": _measure(fleet, base | tls, "https", token, args.requests, context),
            }
    finally:
        fleet.stop()
    rows = [
        f"| {scheme} | {cells[True].cpu_ms:.3f} | {cells[False].cpu_ms:.3f} | "
        f"{cells[True].ok + cells[False].ok} / {2 * args.requests} |"
        for scheme, cells in results.items()
    ]
    report = [
        "# Gateway: what TLS costs",
        "",
        textwrap.fill(
            "The gateway's CPU milliseconds per proxied request (a device route, token check "
            f"cached), {args.requests} requests per cell over {CONNECTIONS} client "
            "connections; `bench/gateway_tls_bench.py`.",
            100,
        ),
        "",
        "| scheme | kept alive | new connection per request | answered 200 |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        *machine(),
        "",
    ]
    args.output.write_text("\n".join(report))
    sys.stdout.write("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
