"""Artifact transfers cut by a `kill -9`: uploads leave nothing behind, downloads resume.

- An upload streaming through the gateway is cut by killing deployments: the client gets an
  error, the upload tried again once deployments is back succeeds, and the storage sweep
  (its ages set to seconds here) removes the partial file, leaving exactly the artifacts'
  objects.
- A download is cut by killing the gateway, or deployments, after its first megabyte: the
  client asks for the rest with `Range` once the process is back, and the bytes it pieced
  together are the artifact's, SHA-256 for SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from services.deployments.artifact.writer import write_single_file_artifact
from tests.deployments.helpers import multipart_body
from tests.faults.stack import RunningLauncher, ready_launcher
from tests.toolkit import Retrying, assert_error, eventually, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

ARTIFACTS: Final = "/api/management/v1/deployments/artifacts"
# Large enough that the socket buffers on the way cannot hold all of it, small enough to
# be quick.
PAYLOAD_SIZE: Final = 24 * 1024 * 1024
CHUNK: Final = 256 * 1024
# An upload is cut, and a download broken off, after this many bytes.
CUT_AT: Final = 1024 * 1024
# Partial uploads idle this long, and objects nothing refers to this old, are swept (s).
PARTIAL_MAX_AGE: Final = 2
ORPHAN_MAX_AGE: Final = 5
SWEEP_ENV: Final = {
    "DEPLOYMENTS_STORAGE_SWEEP_INTERVAL": "1",
    "DEPLOYMENTS_STORAGE_PARTIAL_MAX_AGE": str(PARTIAL_MAX_AGE),
    "DEPLOYMENTS_STORAGE_ORPHAN_MAX_AGE": str(ORPHAN_MAX_AGE),
}
# The client's receive buffer: what it was sent waits upstream, not in its own socket.
RECEIVE_BUFFER: Final = 64 * 1024
# A restarted process imports its whole framework again: slow on a busy two-core machine.
BACK: Final = 90.0


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLauncher]:
    """One stack for the module, its artifact storage swept every second."""
    with ready_launcher(tmp_path_factory.mktemp("launcher"), env=SWEEP_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of random bytes (which no compression shrinks) to put in artifacts."""
    path = tmp_path_factory.mktemp("payload") / "image.bin"
    path.write_bytes(os.urandom(PAYLOAD_SIZE))
    return path


def _artifact(payload: Path, name: str) -> bytes:
    out = io.BytesIO()
    write_single_file_artifact(
        out,
        name=name,
        device_types=["sim-device"],
        source=payload,
        filename="image.bin",
        dest_dir="/opt",
    )
    return out.getvalue()


def _admin_token(launcher: RunningLauncher) -> str:
    """Log in as the admin as soon as the stack answers (after an earlier test's kill)."""

    def login() -> httpx.Response | None:
        response = launcher.login()
        return response if response.status_code == 200 else None

    return wait_until(login, timeout=BACK, what="a login through the gateway").text


@pytest.fixture
async def http(launcher: RunningLauncher) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway as the admin, through a small receive buffer."""
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)]
    )
    async with httpx.AsyncClient(
        base_url=launcher.url,
        transport=transport,
        headers={"Authorization": f"Bearer {_admin_token(launcher)}"},
        timeout=60,
    ) as client:
        yield client


def _upload(
    http: httpx.AsyncClient, body: bytes | AsyncIterator[bytes]
) -> asyncio.Future[httpx.Response]:
    """Upload a multipart body laid out by `multipart_body` (a file part only)."""
    _, headers = multipart_body([], "artifact", b"")
    return asyncio.ensure_future(http.post(ARTIFACTS, content=body, headers=headers))


def _stored(launcher: RunningLauncher) -> tuple[set[str], set[str]]:
    """The keys of the objects in artifact storage, and the names of the partial uploads."""
    root = launcher.state_dir / "artifacts"
    objects: set[str] = set()
    partial: set[str] = set()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        key = path.relative_to(root).as_posix()
        if key.startswith(".partial/"):
            partial.add(path.name)
        else:
            objects.add(key)
    return objects, partial


def _partial_written(launcher: RunningLauncher) -> set[str]:
    """The partial uploads that hold some bytes."""
    directory = launcher.state_dir / "artifacts" / ".partial"
    return {p.name for p in directory.glob("*.part") if p.stat().st_size > 0}


class TestUploadCut:
    async def test_retried_upload_succeeds_and_nothing_is_left(
        self, launcher: RunningLauncher, http: httpx.AsyncClient, payload: Path
    ) -> None:
        artifact = _artifact(payload, "cut-1.0")
        body, _ = multipart_body([], "artifact", artifact)
        killed = asyncio.Event()

        async def cut_short() -> AsyncIterator[bytes]:
            """The body up to the cut, and the rest only once deployments is dead."""
            for start in range(0, len(body), CHUNK):
                if start == CUT_AT:
                    await killed.wait()
                yield body[start : start + CHUNK]

        cut = _upload(http, cut_short())
        partial = await eventually(
            lambda: _partial_written(launcher), within=60, what="a partial upload written"
        )
        pid = launcher.kill("deployments")
        killed.set()
        try:
            answer = await cut
        except httpx.TransportError:
            pass  # the connection broke under the upload
        else:
            assert_error(answer, 502, "deployments is unreachable")

        created = await Retrying().until(lambda: _upload(http, body), 201)
        artifact_id = created.headers["Location"].rsplit("/", 1)[1]
        assert launcher.children()["deployments"] != pid
        listed = (await http.get(ARTIFACTS)).json()
        assert [(a["id"], a["size"]) for a in listed if a["name"] == "cut-1.0"] == [
            (artifact_id, len(artifact))
        ]

        # The sweep removes the partial upload; every object left belongs to an artifact.
        expected = {a["id"] for a in listed}

        def swept() -> bool:
            return _stored(launcher) == (expected, set())

        await eventually(
            swept,
            within=60,
            interval=0.5,
            what="the storage swept",
            details=lambda: f"{_stored(launcher)}, artifacts {expected}",
        )
        log = (launcher.state_dir / "logs" / "deployments.log").read_text()
        for name in partial:
            assert f"removed partial upload .partial/{name}" in log, log[-3000:]


@pytest.fixture(scope="module")
def stored(launcher: RunningLauncher, payload: Path) -> tuple[str, bytes]:
    """An artifact uploaded for the download tests: its id and its bytes."""
    artifact = _artifact(payload, "download-1.0")
    body, headers = multipart_body([], "artifact", artifact)
    token = _admin_token(launcher)
    created = httpx.post(
        launcher.url + ARTIFACTS,
        content=body,
        headers={**headers, "Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert created.status_code == 201, created.text
    return created.headers["Location"].rsplit("/", 1)[1], artifact


async def _download_link(http: httpx.AsyncClient, artifact_id: str) -> str:
    response = await http.get(f"{ARTIFACTS}/{artifact_id}/download")
    assert response.status_code == 200, response.text
    uri: str = response.json()["uri"]
    assert uri.startswith(str(http.base_url).rstrip("/") + "/api/devices/"), uri
    return uri


class TestDownloadResumed:
    @pytest.mark.parametrize("killed", ["gateway", "deployments"])
    async def test_range_completes_the_file(
        self,
        launcher: RunningLauncher,
        http: httpx.AsyncClient,
        stored: tuple[str, bytes],
        killed: str,
    ) -> None:
        artifact_id, artifact = stored
        link = await _download_link(http, artifact_id)
        received = bytearray()
        pid: int | None = None
        async with http.stream("GET", link) as response:
            assert response.status_code == 200
            assert response.headers["accept-ranges"] == "bytes"
            assert int(response.headers["content-length"]) == len(artifact)
            with pytest.raises(httpx.TransportError):  # noqa: PT012 (broken off mid-loop)
                async for chunk in response.aiter_raw():
                    received += chunk
                    if pid is None and len(received) >= CUT_AT:
                        pid = launcher.kill(killed)
        # Broken off: the client holds a prefix of the file.
        assert CUT_AT <= len(received) < len(artifact)
        assert bytes(received) == artifact[: len(received)]

        rest = await Retrying().until(
            lambda: http.get(link, headers={"Range": f"bytes={len(received)}-"}), 206
        )
        assert rest.headers["content-range"] == (
            f"bytes {len(received)}-{len(artifact) - 1}/{len(artifact)}"
        )
        assert launcher.children()[killed] != pid
        whole = bytes(received) + rest.content
        assert hashlib.sha256(whole).hexdigest() == hashlib.sha256(artifact).hexdigest()
        assert len(whole) == len(artifact)
