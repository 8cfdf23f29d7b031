"""Deployments killed in the middle of a status-report storm: every report is acknowledged
in the end and counted once.

The service runs as a real process; 60 simulated devices poll and report `downloading`,
`installing` and `success` at once, retrying on errors as the Mender client does; the
process is killed with SIGKILL mid-storm and started again. Afterwards each device has
exactly one device deployment (in the API and in the database), and the statistics equal
the count of the devices' statuses. A transaction the dead process left open holds its
documents until the database drops it (60 s), so the storm takes about a minute more.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import httpx
import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from common.localstack.embedded import free_port
from services.deployments.artifact.writer import write_single_file_artifact
from services.deployments.models import STAT_NAMES
from services.deployments.store.indexes import DEVICE_DEPLOYMENTS
from tests.deployments.flows import DEPLOYMENTS, stats_of
from tests.deployments.helpers import DEVICE_TYPE, device_headers, multipart_body, user_headers
from tests.toolkit import Retrying, SimulatedDevice, eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

ROOT: Final = Path(__file__).resolve().parents[2]
DEVICES: Final = 60
# Reports acknowledged before the kill: about a quarter of the storm.
KILL_AFTER: Final = DEVICES
STATUSES: Final = ("downloading", "installing", "success")


class _Deployments:
    """`python -m services.deployments` on one port, started again after a kill."""

    def __init__(self, mongo_url: str, db_name: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "deployments.log"
        self.env = {
            **os.environ,
            "DEPLOYMENTS_LISTEN_PORT": str(self.port),
            "DEPLOYMENTS_MONGO_URL": mongo_url,
            "DEPLOYMENTS_MONGO_DB": db_name,
            "DEPLOYMENTS_DEV_MODE": "true",
            "DEPLOYMENTS_STORAGE_PATH": str(workdir / "artifacts"),
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process and wait until it answers its health check."""
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.deployments",
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        async with httpx.AsyncClient(base_url=self.url) as client:

            async def healthy() -> bool:
                try:
                    health = await client.get("/api/internal/v1/deployments/health")
                except httpx.TransportError:
                    return False  # not listening yet
                return health.status_code == 204

            await eventually(healthy, within=60)

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        """Stop it if it runs."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def deployments(mongo_url: str, db_name: str, tmp_path: Path) -> AsyncIterator[_Deployments]:
    """The service as a real process (not started yet)."""
    service = _Deployments(mongo_url, db_name, tmp_path)
    try:
        yield service
    finally:
        await service.stop()


def _artifact(workdir: Path) -> bytes:
    payload = workdir / "motd"
    payload.write_text("updated\n")
    out = io.BytesIO()
    write_single_file_artifact(
        out,
        name="storm-2.0",
        device_types=[DEVICE_TYPE],
        source=payload,
        filename="motd",
        dest_dir="/etc",
    )
    return out.getvalue()


async def _device(device: SimulatedDevice, deployment_id: str) -> None:
    """A device's part in the storm: it finds the deployment and reports each status."""
    offered = await device.poll()
    assert offered is not None, f"{device.identity}: no deployment offered"
    assert offered["id"] == deployment_id
    for status in STATUSES:
        await device.report(deployment_id, status)


def _storm_device(client: httpx.AsyncClient, device_id: str, retrying: Retrying) -> SimulatedDevice:
    """A device that already holds a token (deployments trusts what the gateway checked)."""
    device = SimulatedDevice(
        client,
        {"serial": device_id},
        retrying=retrying,
        device_type=DEVICE_TYPE,
        artifact_name="installed-1.0",
    )
    device.token = device_headers(device_id)["Authorization"].removeprefix("Bearer ")
    return device


async def test_killed_mid_storm_every_report_counts_once(
    deployments: _Deployments, tmp_path: Path, mongo: AsyncMongoClient[Document], db_name: str
) -> None:
    await deployments.start()
    devices = [f"storm-{i:03}" for i in range(DEVICES)]
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=deployments.url, limits=limits, timeout=120) as client:
        body, headers = multipart_body([], "artifact", _artifact(tmp_path))
        uploaded = await client.post(
            "/api/management/v1/deployments/artifacts",
            content=body,
            headers={**headers, **user_headers()},
        )
        assert uploaded.status_code == 201, uploaded.text
        created = await client.post(
            DEPLOYMENTS,
            json={"name": "storm", "artifact_name": "storm-2.0", "devices": devices},
            headers=user_headers(),
        )
        assert created.status_code == 201, created.text
        deployment_id = created.headers["Location"].rsplit("/", 1)[1]

        retrying = Retrying()
        storm = [_storm_device(client, d, retrying) for d in devices]
        running = asyncio.gather(*(_device(d, deployment_id) for d in storm))
        await eventually(lambda: retrying.answered >= KILL_AFTER, within=120)
        await deployments.kill()
        await deployments.start()
        await running

        # Requests died with the process, and were answered by the new one.
        assert retrying.failed > 0
        assert retrying.answered == DEVICES * (1 + len(STATUSES))
        response = await client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert response.json()["status"] == "finished"
        assert response.json()["device_count"] == DEVICES
        listed = await client.get(f"{DEPLOYMENTS}/{deployment_id}/devices", headers=user_headers())
        # Each device once, each at its last status; the statistics count exactly those.
        assert sorted(d["id"] for d in listed.json()) == devices
        assert {d["status"] for d in listed.json()} == {"success"}
        counted = Counter(d["status"] for d in listed.json())
        statistics = await stats_of(client, deployment_id)
        assert statistics == dict.fromkeys(STAT_NAMES, 0) | dict(counted)
        assert statistics["success"] == DEVICES

    # And in the database itself: one device deployment per device, none left over.
    stored = mongo[db_name][DEVICE_DEPLOYMENTS]
    assert await stored.count_documents({"deploymentid": deployment_id}) == DEVICES
    assert sorted(await stored.distinct("deviceid", {"deploymentid": deployment_id})) == devices
