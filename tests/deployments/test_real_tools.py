"""The real `mender-cli` against the deployments service over HTTP (upload, list, delete)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.deployments.config import Settings
from services.deployments.main import create_app
from tests.deployments.helpers import ArtifactFactory, user_headers
from tests.toolkit import LiveServer


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveServer]:
    """The service on a loopback port (real HTTP: mender-cli sends chunked bodies)."""
    server = LiveServer(create_app(settings), lifespan="on")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _cli(server: LiveServer, home: Path, *args: str) -> tuple[int, str]:
    token = user_headers()["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")}
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/mender-cli",
        "--server",
        server.url,
        "--token-value",
        token,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


async def test_mender_cli_upload_list_delete(
    live: LiveServer, tmp_path: Path, artifacts_factory: ArtifactFactory
) -> None:
    artifact = tmp_path / "hello-1.0.mender"
    artifact.write_bytes(artifacts_factory.make("hello-1.0", metadata={"k": "v"}))
    code, output = await _cli(
        live, tmp_path, "artifacts", "upload", "--description", "my desc", "--no-progress",
        str(artifact),
    )  # fmt: skip
    assert code == 0, output
    assert "upload successful" in output

    code, output = await _cli(live, tmp_path, "artifacts", "list", "-d", "3")
    assert code == 0, output
    assert "hello-1.0" in output
    assert "my desc" in output
    artifact_id = next(
        line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("ID:")
    )

    code, output = await _cli(live, tmp_path, "artifacts", "delete", artifact_id)
    assert code == 0, output
    code, output = await _cli(live, tmp_path, "artifacts", "list")
    assert "hello-1.0" not in output
