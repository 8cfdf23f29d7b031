"""Deployments killed in the middle of a status-report storm: every report is acknowledged
in the end, and the statistics equal the devices' statuses.

The service runs as a real process; 100 devices poll and report `downloading`, `installing`
and `success` at once, retrying on errors as the Mender client does; the process is killed
with SIGKILL mid-storm and started again. A transaction the dead process left open holds
its documents until the database drops it (60 s), so the storm takes about a minute more.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

import httpx
import pytest

from common.localstack.embedded import free_port
from services.deployments.artifact.writer import write_single_file_artifact
from services.deployments.models import STAT_NAMES
from tests.deployments.flows import DEPLOYMENTS, NEXT_V2, stats_of
from tests.deployments.helpers import DEVICE_TYPE, device_headers, multipart_body, user_headers
from tests.toolkit import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

ROOT: Final = Path(__file__).resolve().parents[2]
DEVICES: Final = 100
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


class _Storm:
    """The devices' requests, retried until answered as expected."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.acknowledged = 0
        self.failed = 0

    async def until(self, send: Callable[[], Awaitable[httpx.Response]], expected: int) -> None:
        while True:
            try:
                response = await send()
            except httpx.TransportError:
                response = None  # the process died under the request, or is not back yet
            if response is not None and response.status_code == expected:
                self.acknowledged += 1
                return
            if response is not None and response.status_code < 500:
                raise AssertionError(f"{response.status_code}: {response.text}")
            self.failed += 1
            await asyncio.sleep(0.2)

    async def device(self, device_id: str, deployment_id: str) -> None:
        headers = device_headers(device_id)
        body = {"device_provides": {"artifact_name": "installed-1.0", "device_type": DEVICE_TYPE}}
        await self.until(
            functools.partial(self.client.post, NEXT_V2, json=body, headers=headers), 200
        )
        url = f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status"
        for status in STATUSES:
            report = functools.partial(
                self.client.put, url, json={"status": status}, headers=headers
            )
            await self.until(report, 204)


async def test_killed_mid_storm_every_report_counts_once(
    deployments: _Deployments, tmp_path: Path
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

        storm = _Storm(client)
        running = asyncio.gather(*(storm.device(d, deployment_id) for d in devices))
        await eventually(lambda: storm.acknowledged >= KILL_AFTER, within=120)
        await deployments.kill()
        await deployments.start()
        await running

        # Requests died with the process, and were answered by the new one.
        assert storm.failed > 0
        assert storm.acknowledged == DEVICES * (1 + len(STATUSES))
        expected = dict.fromkeys(STAT_NAMES, 0) | {"success": DEVICES}
        assert await stats_of(client, deployment_id) == expected
        response = await client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert response.json()["status"] == "finished"
        assert response.json()["device_count"] == DEVICES
        listed = await client.get(f"{DEPLOYMENTS}/{deployment_id}/devices", headers=user_headers())
        assert {d["id"]: d["status"] for d in listed.json()} == dict.fromkeys(devices, "success")
