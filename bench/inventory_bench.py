"""What a device's inventory report costs: a first report, the same again, a changed one.

    uv run python bench/inventory_bench.py                  # 2,000 devices, 32 connections
    uv run python bench/inventory_bench.py --devices 500 --connections 8

`python -m services.inventory` alone (one uvicorn worker) over the embedded Mongo-wire
server on disk, as `make run` starts it (every commit synced), called directly with
well-formed unsigned device tokens (the gateway verifies them; the service only decodes).
Each device sends a `PUT /api/devices/v1/inventory/device/attributes` of 15 attributes, as
the real client does, once per phase: the first report (the device is created), the same
report again (what a fleet sends almost always), and a report with one changed value.
Per phase: req/s, latency, database operations per request (the server's `top`) and CPU
ms per request of the service and of the database. Writes `bench/results/inventory.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

import aiohttp

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments_bench import (  # noqa: E402
    Call,
    OpCounter,
    Phase,
    _bearer,
    _load,
    _phase,
    _session,
    _token,
    _wait_healthy,
)
from procstats import machine  # noqa: E402

from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402

INVENTORY: Final = "/api/devices/v1/inventory/device/attributes"
RESULTS: Final = ROOT / "bench" / "results" / "inventory.md"


def _report(device: str, version: int) -> list[dict[str, object]]:
    """15 attributes, as `mender-inventory-*` scripts give them; `version` changes one."""
    return [
        {"name": "device_type", "value": "bench-device"},
        {"name": "artifact_name", "value": f"release-{version}"},
        {"name": "hostname", "value": device},
        {"name": "kernel", "value": "Linux version 6.1.0-bench (gcc 12.2.0) #1 SMP"},
        {"name": "os", "value": "Debian GNU/Linux 12 (bookworm)"},
        {"name": "cpu_model", "value": "ARMv8 Processor rev 3 (v8l)"},
        {"name": "mem_total_kB", "value": "3884332"},
        {"name": "mac_eth0", "value": "02:00:00:00:00:01"},
        {"name": "ipv4_eth0", "value": "10.0.0.7/24"},
        {"name": "network_interfaces", "value": ["eth0", "wlan0"]},
        {"name": "rootfs-image.version", "value": f"release-{version}"},
        {"name": "rootfs_type", "value": "ext4"},
        {"name": "bootloader_integration", "value": "uboot"},
        {"name": "mender_client_version", "value": "3.5.2"},
        {"name": "update_modules", "value": ["deb", "directory", "rootfs-image", "script"]},
    ]


async def run(devices_count: int, connections: int, work: Path) -> list[Phase]:
    """Start the database and inventory, drive the three phases."""
    database = EmbeddedMongo(work / "db")
    database.start()
    port = free_port()
    env = {
        **os.environ,
        "INVENTORY_LISTEN_PORT": str(port),
        "INVENTORY_MONGO_URL": database.url,
        "INVENTORY_DEV_MODE": "true",
        "INVENTORY_LOG_LEVEL": "WARNING",
    }
    service = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "services.inventory"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ops = OpCounter(database.url)
    base = f"http://127.0.0.1:{port}"
    tokens = {
        f"device-{i:06d}": _token({"sub": f"device-{i:06d}", "mender.device": True})
        for i in range(devices_count)
    }
    phases: list[Phase] = []
    try:
        assert database.pid is not None
        pids = {"inventory": service.pid, "database": database.pid}
        async with _session(connections) as session:
            await _wait_healthy(session, base + "/api/internal/v1/inventory/health")

            def report(version: int) -> Call:
                async def call(client: aiohttp.ClientSession, device: str) -> int:
                    async with client.put(
                        base + INVENTORY,
                        json=_report(device, version),
                        headers=_bearer(tokens[device]),
                    ) as response:
                        await response.read()
                        return response.status

                return call

            for label, version in (
                ("first report (device created)", 1),
                ("the same report again", 1),
                ("one value changed", 2),
            ):
                call = report(version)
                phase = await _phase(
                    label, session, list(tokens), connections, call, 200, ops=ops, pids=pids
                )
                phases.append(phase)
    finally:
        await ops.close()
        if service.returncode is None:
            service.terminate()
            await asyncio.wait_for(service.wait(), 10)
        database.stop()
    return phases


def _markdown(phases: list[Phase], devices: int, connections: int, load: str) -> str:
    lines = [
        "# Inventory reports",
        "",
        "Written by `bench/inventory_bench.py`: one inventory process over the embedded",
        "database on disk (commits synced, as `make run`), called directly; "
        f"{devices:,} devices, {connections} connections, 15 attributes per report.",
        "",
        *machine(),
        f"- load average before: {load}",
        "",
        "| phase | req/s | p50 ms | p99 ms | db ops/req | inventory CPU ms/req "
        "| database CPU ms/req | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in phases:
        ops = sum(p.ops.values())
        lines.append(
            f"| {p.label} | {p.rps:,.0f} | {p.p50:.1f} | {p.p99:.1f} | {ops:.2f} "
            f"| {p.cpu['inventory']:.2f} | {p.cpu['database']:.2f} | {p.failures} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the bench and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    load = _load()
    with tempfile.TemporaryDirectory() as work:
        phases = asyncio.run(run(args.devices, args.connections, Path(work)))
    RESULTS.write_text(_markdown(phases, args.devices, args.connections, load))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
