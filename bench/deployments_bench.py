"""What the device hot path of deployments costs: `next` polls and status reports.

    uv run python bench/deployments_bench.py                  # 1000 devices, 8 connections
    uv run python bench/deployments_bench.py --devices 2000 --connections 32

Starts the embedded Mongo-wire server and `python -m services.deployments` (one uvicorn
worker on 127.0.0.1, local storage), uploads a real artifact (`mender-artifact`), creates
one deployment for every simulated device and drives the phases a fleet goes through, each
device once per phase: polls with nothing to do, first polls (device deployments created),
repeat polls, and the status reports `downloading`, `installing`, `success`. It checks the
statistics are exact at the end and writes `bench/results/deployments.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.embedded import EmbeddedMongo, free_port  # noqa: E402

NEXT = "/api/devices/v2/deployments/device/deployments/next"
DEPLOYMENTS = "/api/management/v1/deployments/deployments"


def _token(claims: dict[str, object]) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def _device(device_id: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + _token({"sub": device_id, "mender.device": True})}


_USER = {"Authorization": "Bearer " + _token({"sub": "bench", "mender.user": True})}


def _artifact(work: Path) -> bytes:
    for name, text in (("dest_dir", "/tmp/x\n"), ("filename", "f\n"), ("permissions", "644\n")):
        (work / name).write_text(text)
    (work / "f").write_bytes(os.urandom(4096))
    out = work / "bench.mender"
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "single-file", "-n", "bench-2.0",
         "-t", "bench-device", "-f", str(work / "dest_dir"), "-f", str(work / "filename"),
         "-f", str(work / "permissions"), "-f", str(work / "f"), "-o", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out.read_bytes()


def _start_service(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.deployments"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _phase(
    label: str,
    devices: list[str],
    connections: int,
    call: Callable[[str], Awaitable[int]],
    expected: int,
) -> dict[str, object]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for device in devices:
        queue.put_nowait(device)
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while not queue.empty():
            device = queue.get_nowait()
            start = time.perf_counter()
            status = await call(device)
            latencies.append(time.perf_counter() - start)
            failures += status != expected

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "phase": label,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "failures": failures,
    }


async def run(
    devices_count: int, connections: int
) -> tuple[list[dict[str, object]], dict[str, int]]:
    """Start everything, drive the phases, return the measurements and the final statistics."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        database = EmbeddedMongo(":memory:")
        database.start()
        port = free_port()
        env = {
            **os.environ,
            "DEPLOYMENTS_LISTEN_PORT": str(port),
            "DEPLOYMENTS_MONGO_URL": database.url,
            "DEPLOYMENTS_DEV_MODE": "true",
            "DEPLOYMENTS_STORAGE_PATH": str(work / "storage"),
            "DEPLOYMENTS_LOG_LEVEL": "WARNING",
        }
        service = _start_service(env)
        try:
            base = f"http://127.0.0.1:{port}"
            limits = httpx.Limits(max_connections=connections)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
                for _ in range(200):
                    try:
                        if (
                            await client.get("/api/internal/v1/deployments/health")
                        ).status_code == 204:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                boundary = "bench"
                body = (
                    (
                        f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
                        'filename="a.mender"\r\n\r\n'
                    ).encode()
                    + _artifact(work)
                    + f"\r\n--{boundary}--\r\n".encode()
                )
                upload = await client.post(
                    "/api/management/v1/deployments/artifacts",
                    content=body,
                    headers={**_USER, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
                upload.raise_for_status()
                devices = [f"device-{i:06d}" for i in range(devices_count)]
                created = await client.post(
                    DEPLOYMENTS,
                    json={"name": "bench", "artifact_name": "bench-2.0", "devices": devices},
                    headers=_USER,
                )
                created.raise_for_status()
                deployment = created.headers["Location"].rsplit("/", 1)[1]

                async def poll(device: str) -> int:
                    response = await client.post(
                        NEXT,
                        json={
                            "device_provides": {
                                "artifact_name": "bench-1.0",
                                "device_type": "bench-device",
                            }
                        },
                        headers=_device(device),
                    )
                    return response.status_code

                def report(status: str) -> Callable[[str], Awaitable[int]]:
                    async def call(device: str) -> int:
                        response = await client.put(
                            f"/api/devices/v1/deployments/device/deployments/{deployment}/status",
                            json={"status": status},
                            headers=_device(device),
                        )
                        return response.status_code

                    return call

                strangers = [f"stranger-{i:06d}" for i in range(devices_count)]
                phases: list[tuple[str, list[str], Callable[[str], Awaitable[int]], int]] = [
                    ("poll, nothing to do", strangers, poll, 204),
                    ("poll, first (device deployment created)", devices, poll, 200),
                    ("poll, update under way", devices, poll, 200),
                    ("status downloading", devices, report("downloading"), 204),
                    ("status installing", devices, report("installing"), 204),
                    ("status success", devices, report("success"), 204),
                ]
                results = [
                    await _phase(label, who, connections, call, expected)
                    for label, who, call, expected in phases
                ]
                stats = (
                    await client.get(f"{DEPLOYMENTS}/{deployment}/statistics", headers=_USER)
                ).json()
        finally:
            service.terminate()
            service.wait(timeout=10)
            database.stop()
    return results, stats


def _report(
    results: list[dict[str, object]], stats: dict[str, int], devices: int, connections: int
) -> str:
    lines = [
        "# Deployments benchmark results",
        "",
        "Written by `bench/deployments_bench.py`.",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- nproc: {os.cpu_count()}, python {platform.python_version()}",
        f"- load average when written: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- {devices} devices in one deployment, {connections} concurrent connections,",
        "  one uvicorn worker, the embedded Mongo-wire server (SecantusDB), local storage",
        "",
        "## Queries per request (asserted by `tests/deployments/test_store.py`)",
        "",
        "| request | queries | what |",
        "| --- | ---: | --- |",
        "| poll, nothing to do | 3 | active device deployment, newest finished one, next"
        " deployment listing the device |",
        "| poll, first of a deployment | 6 | the 3 above, smallest compatible artifact, atomic"
        " counter claim (`$inc` with room check), insert of the device deployment |",
        "| poll, update under way | 1 | the active device deployment (it embeds its artifact) |",
        "| status report | 3 | device deployment, compare-and-set of its status, counter"
        " `$inc`; +1 when the deployment status moves (twice per deployment at most), +1"
        " upsert of the device's last status when it finishes |",
        "",
        "Every one of them is served by an index (the test checks each query plan).",
        "",
        "## Latency and throughput",
        "",
        "| phase | requests | req/s | p50 ms | p99 ms | unexpected status |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        lines.append(
            f"| {row['phase']} | {row['requests']} | {row['rps']:,.0f} | {row['p50']:.1f} | "
            f"{row['p99']:.1f} | {row['failures']} |"
        )
    exact = stats.get("success") == devices and sum(stats.values()) == devices
    lines += [
        "",
        f"Final statistics: success {stats.get('success')} of {devices} "
        f"({'exact' if exact else 'NOT EXACT'}), all counters {stats}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "deployments.md"
    )
    args = parser.parse_args()
    results, stats = asyncio.run(run(args.devices, args.connections))
    text = _report(results, stats, args.devices, args.connections)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
