"""What measuring a request costs: the metrics middleware and the database command counter.

    uv run python bench/metrics_bench.py            # ~30 s

In one process, with nothing else between the two: the CPU time per request of a bare ASGI
app answering 204, called directly and through `common.core.metrics.RequestMetrics` (one
histogram observation for the request, one for its database commands, a contextvar set and
reset, the status watched), for the route label of a FastAPI app and of the gateway (with
the two counters its token check adds); and the
CPU time per database command of the command listener `common.core.mongo` registers.
Rounds alternate between the variants and the median round is reported, so a busy machine
moves both alike. Results: `bench/results/metrics.md` (the gateway's end-to-end figure is
recorded there too, from `gateway_bench.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procstats import machine  # noqa: E402
from pymongo import monitoring  # noqa: E402

from common.core.metrics import RequestMetrics, _operations  # noqa: E402
from common.core.mongo import create_client  # noqa: E402
from gateway.metrics import token_cache, token_checks  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "metrics.md"
# Recorded by hand from `gateway_bench.py` runs (the file says how); kept by this script.
GATEWAY_SECTION: Final = "## Through the gateway, end to end"
_Scope = MutableMapping[str, Any]
_App = Callable[[_Scope, Any, Any], Awaitable[None]]


class _Route:
    path = "/api/devices/v2/deployments/device/deployments/next"


async def _bare(scope: _Scope, _receive: Any, send: Any) -> None:
    scope["route"] = _Route  # as the router leaves it
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _token_checked(scope: _Scope, receive: Any, send: Any) -> None:
    # What the gateway's token check adds to a request: its two counters.
    token_cache("device", "hit").inc()
    token_checks("device", "accepted").inc()
    await _bare(scope, receive, send)


def _template(scope: _Scope) -> str:
    path: str = scope["route"].path
    return path


async def _drive(app: _App, requests: int) -> float:
    """CPU seconds per request of `requests` calls of `app`."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_: Any) -> None:
        return None

    started = time.process_time()
    for _ in range(requests):
        scope = {"type": "http", "method": "POST", "path": "/p", "headers": []}
        await app(scope, receive, send)
    return (time.process_time() - started) / requests


def _listener_cost(commands: int) -> float:
    """CPU seconds per command of publishing it to the listeners of `create_client`'s client.

    Without a listener pymongo builds no event, so this is all the counting costs: the
    event built and handed to the counter, inside a request's count.
    """
    listeners = [
        listener
        for listener in create_client("mongodb://127.0.0.1:1").options.event_listeners
        if isinstance(listener, monitoring.CommandListener)
    ]
    command = {"find": "devices", "filter": {"_id": "d"}}
    address = ("127.0.0.1", 27017)
    token = _operations.set([0])
    started = time.process_time()
    for i in range(commands):
        event = monitoring.CommandStartedEvent(command, "bench", i, address, None)
        for listener in listeners:
            listener.started(event)
    elapsed = time.process_time() - started
    _operations.reset(token)
    return elapsed / commands


async def _run(requests: int, rounds: int) -> dict[str, list[float]]:
    variants: dict[str, _App] = {
        "bare ASGI app": _bare,
        "through RequestMetrics (service: route template, database commands)": RequestMetrics(
            _bare, route_of=_template
        ),
        "through RequestMetrics (gateway: route-table entry)": RequestMetrics(
            _bare, route_of=_template, database=False
        ),
        "the same, plus the token check's two counters": RequestMetrics(
            _token_checked, route_of=_template, database=False
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for app in variants.values():
        await _drive(app, requests // 10)  # warm-up
    for _ in range(rounds):
        for name, app in variants.items():
            results[name].append(await _drive(app, requests))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="per round and variant")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = asyncio.run(_run(args.requests, args.rounds))
    listener = statistics.median(_listener_cost(args.requests) for _ in range(args.rounds))
    bare = statistics.median(results["bare ASGI app"])
    lines = [
        "## The middleware and the command counter, in process (`bench/metrics_bench.py`)",
        "",
        *machine(),
        "",
        f"{args.rounds} alternating rounds of {args.requests:,} requests per variant; the "
        "median round's CPU time per request (`time.process_time`).",
        "",
        "| variant | CPU µs/request | added by measuring |",
        "| --- | ---: | ---: |",
    ]
    for name, values in results.items():
        median = statistics.median(values)
        added = "" if name == "bare ASGI app" else f"{(median - bare) * 1e6:.2f}"
        lines.append(f"| {name} | {median * 1e6:.2f} | {added} |")
    lines += [
        "",
        f"The command listener: {listener * 1e6:.3f} µs of CPU per database command.",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    _write(args.output, section)
    return 0


def _write(path: Path, section: str) -> None:
    """Write this script's section; the end-to-end section that follows it is kept."""
    kept = path.read_text().partition(GATEWAY_SECTION)[2] if path.exists() else ""
    text = "# Metrics benchmark results\n\n" + section
    if kept:
        text = text.rstrip("\n") + "\n\n" + GATEWAY_SECTION + kept
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
