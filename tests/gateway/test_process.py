"""`python -m gateway` as a real process: configuration from the environment, JSON logs, stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx

from common.localstack.embedded import free_port
from tests.gateway.conftest import Upstreams
from tests.toolkit import eventually


async def _wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:

        async def ready() -> bool:
            assert proc.returncode is None, "the gateway exited early"
            try:
                return (await client.get(f"{url}/status")).status_code == 204
            except httpx.TransportError:
                return False

        await eventually(ready, within=20, interval=0.1, what="the gateway ready")


class TestGatewayProcess:
    async def test_serves_and_stops_cleanly(self, upstreams: Upstreams, tmp_path: Path) -> None:
        port = free_port()
        env = {
            **os.environ,
            "GATEWAY_LISTEN_PORT": str(port),
            "GATEWAY_USERADM_ADDR": upstreams.addrs["useradm"],
            "GATEWAY_LOG_LEVEL": "info",
            # Other services' variables in the same environment are ignored.
            "USERADM_LISTEN_PORT": "1",
        }
        log = tmp_path / "gateway.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", env=env, stdout=out, stderr=out
            )
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_ready(url, proc)
            async with httpx.AsyncClient(base_url=url) as client:
                r = await client.post("/api/management/v1/useradm/auth/login")
                assert r.status_code == 200
                assert r.json()["upstream"] == "useradm"
                r = await client.get("/api/management/v1/inventory/devices")
                assert r.status_code == 503
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal it caught.
            assert await asyncio.wait_for(proc.wait(), 15) in (0, -signal.SIGTERM)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert lines
        assert all(line["service"] == "gateway" for line in lines)
        messages = [line["msg"] for line in lines]
        assert any(f"127.0.0.1:{port}" in m for m in messages)
        assert any("shutdown complete" in m for m in messages)
