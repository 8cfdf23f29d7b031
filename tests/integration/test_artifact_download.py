"""Artifact files through the gateway: chunked uploads, signed download links, resumption."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from common.localstack.launcher import Stack

pytestmark = pytest.mark.timeout(120)

ARTIFACTS: Final = "/api/management/v1/deployments/artifacts"
MENDER_ARTIFACT: Final = "/usr/bin/mender-artifact"
PAYLOAD_SIZE: Final = 3 * 1024 * 1024
_SMALL_PAYLOAD: Final = 256 * 1024
CHUNK: Final = 64 * 1024


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _build(work: Path, name: str, payload_size: int) -> bytes:
    """A real single-file artifact with an uncompressed, pseudo-random payload."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "dest_dir").write_text("/tmp/fleetport-target\n")
    (work / "filename").write_text("payload.bin\n")
    (work / "permissions").write_text("644\n")
    (work / "payload.bin").write_bytes(hashlib.shake_256(name.encode()).digest(payload_size))
    out = work / "artifact.mender"
    subprocess.run(
        [MENDER_ARTIFACT, "write", "module-image", "-T", "single-file", "-n", name,
         "-t", "integration-device", "--compression", "none",
         "-f", str(work / "dest_dir"), "-f", str(work / "filename"),
         "-f", str(work / "permissions"), "-f", str(work / "payload.bin"), "-o", str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


def _chunked_upload_body(
    boundary: str, content: bytes, *, description: str, terminate: bool = True
) -> Iterator[bytes]:
    """The multipart body mender-cli sends, as a generator: httpx sends it chunked."""
    for name, value in (("size", str(len(content))), ("description", description)):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
        'filename="artifact.mender"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    for offset in range(0, len(content), CHUNK):
        yield content[offset : offset + CHUNK]
    if terminate:
        yield f"\r\n--{boundary}--\r\n".encode()


def _upload(
    stack: Stack, token: str, content: bytes, *, description: str, terminate: bool = True
) -> httpx.Response:
    boundary = uuid.uuid4().hex
    return httpx.post(
        stack.url + ARTIFACTS,
        content=_chunked_upload_body(
            boundary, content, description=description, terminate=terminate
        ),
        headers={
            **_bearer(token),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        timeout=60,
    )


def _artifact_ids(stack: Stack, token: str) -> list[str]:
    response = httpx.get(stack.url + ARTIFACTS, headers=_bearer(token))
    assert response.status_code == 200
    return sorted(a["id"] for a in response.json())


def _stored_files(stack: Stack) -> list[Path]:
    return sorted(p for p in (stack.state_dir / "artifacts").rglob("*") if p.is_file())


def _with_query(uri: str, **changes: str) -> str:
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class Uploaded:
    """An artifact uploaded through the gateway, with its bytes."""

    id: str
    name: str
    content: bytes

    @property
    def sha256(self) -> str:
        """The SHA-256 of the file as uploaded."""
        return hashlib.sha256(self.content).hexdigest()


@pytest.fixture(scope="module")
def uploaded(stack: Stack, admin_token: str, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    """A few-MB artifact uploaded through the gateway as mender-cli does (chunked)."""
    name = f"download-{uuid.uuid4().hex[:8]}"
    content = _build(tmp_path_factory.mktemp("artifact"), name, PAYLOAD_SIZE)
    response = _upload(stack, admin_token, content, description="resumable")
    assert response.status_code == 201, response.text
    artifact_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    return Uploaded(artifact_id, name, content)


@pytest.fixture
def link(stack: Stack, admin_token: str, uploaded: Uploaded) -> str:
    """A fresh signed download link to the uploaded artifact."""
    response = httpx.get(
        f"{stack.url}{ARTIFACTS}/{uploaded.id}/download", headers=_bearer(admin_token)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"uri", "expire"} <= set(body)
    assert body.get("method", "GET") == "GET"
    assert body["uri"].startswith(stack.url + "/api/devices/v1/deployments/download/")
    uri: str = body["uri"]
    return uri


class TestUploadedArtifact:
    def test_listed_with_its_size(self, stack: Stack, admin_token: str, uploaded: Uploaded) -> None:
        response = httpx.get(f"{stack.url}{ARTIFACTS}/{uploaded.id}", headers=_bearer(admin_token))
        assert response.status_code == 200
        artifact = response.json()
        assert artifact["name"] == uploaded.name
        assert artifact["description"] == "resumable"
        assert artifact["size"] == len(uploaded.content)
        assert artifact["device_types_compatible"] == ["integration-device"]


class TestDownloadLink:
    def test_without_authorization(self, link: str, uploaded: Uploaded) -> None:
        response = httpx.get(link)
        assert response.status_code == 200
        assert "authorization" not in {k.lower() for k in response.request.headers}
        assert response.headers["Content-Length"] == str(len(uploaded.content))
        assert response.headers["Accept-Ranges"] == "bytes"
        assert f"{uploaded.name}.mender" in response.headers["Content-Disposition"]
        assert response.headers["X-MEN-RequestID"]
        assert hashlib.sha256(response.content).hexdigest() == uploaded.sha256

    def test_management_route_needs_a_token(self, stack: Stack, uploaded: Uploaded) -> None:
        response = httpx.get(f"{stack.url}{ARTIFACTS}/{uploaded.id}/download")
        assert response.status_code == 401
        assert set(response.json()) == {"error", "request_id"}

    def test_resume_after_dropped_connection(self, link: str, uploaded: Uploaded) -> None:
        size = len(uploaded.content)
        half = size // 2
        received = bytearray()
        # A client of its own, closed mid-body: the connection is dropped, not reused.
        with httpx.Client(timeout=30) as client, client.stream("GET", link) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw(CHUNK):
                received += chunk
                if len(received) >= half:
                    break
        offset = len(received)
        assert half <= offset < size

        resumed = httpx.get(link, headers={"Range": f"bytes={offset}-"}, timeout=30)
        assert resumed.status_code == 206
        assert resumed.headers["Content-Range"] == f"bytes {offset}-{size - 1}/{size}"
        assert resumed.headers["Content-Length"] == str(size - offset)
        assert len(resumed.content) == size - offset
        whole = bytes(received) + resumed.content
        assert hashlib.sha256(whole).hexdigest() == uploaded.sha256

    def test_closed_range(self, link: str, uploaded: Uploaded) -> None:
        size = len(uploaded.content)
        response = httpx.get(link, headers={"Range": "bytes=100-1123"})
        assert response.status_code == 206
        assert response.headers["Content-Range"] == f"bytes 100-1123/{size}"
        assert response.headers["Content-Length"] == "1024"
        assert response.content == uploaded.content[100:1124]

    def test_range_past_the_end(self, link: str, uploaded: Uploaded) -> None:
        size = len(uploaded.content)
        response = httpx.get(link, headers={"Range": f"bytes={size}-"})
        assert response.status_code == 416
        assert response.headers["Content-Range"] == f"bytes */{size}"
        body = response.json()
        assert set(body) == {"error", "request_id"}
        assert body["request_id"] == response.headers["X-MEN-RequestID"]

    @pytest.mark.parametrize(
        "field",
        ["x-men-signature", "x-men-expire", "filename"],
    )
    def test_tampered_link(self, link: str, field: str) -> None:
        query = dict(parse_qsl(urlsplit(link).query))
        forged = {
            # The same length and alphabet, one character changed.
            "x-men-signature": ("A" if query["x-men-signature"][0] != "A" else "B")
            + query["x-men-signature"][1:],
            # A later expiry than the one that was signed.
            "x-men-expire": "2099-01-01T00:00:00Z",
            "filename": "other.mender",
        }[field]
        response = httpx.get(_with_query(link, **{field: forged}))
        assert response.status_code == 403
        body = response.json()
        assert set(body) == {"error", "request_id"}
        assert body["error"] == "signature invalid"
        assert body["request_id"] == response.headers["X-MEN-RequestID"]

    def test_another_object_with_the_same_signature(self, link: str) -> None:
        parts = urlsplit(link)
        other = parts.path.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
        response = httpx.get(urlunsplit(parts._replace(path=other)))
        assert response.status_code == 403
        assert set(response.json()) == {"error", "request_id"}


class TestCorruptChunkedUpload:
    @pytest.fixture
    def valid(self, tmp_path: Path) -> tuple[str, bytes]:
        """A valid artifact nobody has uploaded (a fresh name), and its name."""
        name = f"corrupt-{uuid.uuid4().hex[:8]}"
        return name, _build(tmp_path, name, _SMALL_PAYLOAD)

    def test_payload_byte_flipped(
        self, stack: Stack, admin_token: str, uploaded: Uploaded, valid: tuple[str, bytes]
    ) -> None:
        name, content = valid
        before, files = _artifact_ids(stack, admin_token), _stored_files(stack)
        # The payload is stored uncompressed: a byte flipped inside it keeps every tar
        # header intact and only breaks the payload's checksum in the manifest.
        payload = hashlib.shake_256(name.encode()).digest(_SMALL_PAYLOAD)
        corrupt = bytearray(content)
        corrupt[content.index(payload) + _SMALL_PAYLOAD // 2] ^= 0xFF
        response = _upload(stack, admin_token, bytes(corrupt), description="flipped")
        assert response.status_code == 400
        body = response.json()
        assert set(body) == {"error", "request_id"}
        assert "checksum" in body["error"]
        assert _artifact_ids(stack, admin_token) == before
        assert _stored_files(stack) == files

    def test_truncated_body(
        self, stack: Stack, admin_token: str, uploaded: Uploaded, valid: tuple[str, bytes]
    ) -> None:
        _, content = valid
        before, files = _artifact_ids(stack, admin_token), _stored_files(stack)
        # The body stops mid-file, without the closing boundary, like a dropped client.
        response = _upload(
            stack, admin_token, content[: len(content) // 2], description="cut", terminate=False
        )
        assert response.status_code == 400
        body = response.json()
        assert set(body) == {"error", "request_id"}
        assert "unexpected EOF" in body["error"] or "truncated" in body["error"]
        assert _artifact_ids(stack, admin_token) == before
        assert _stored_files(stack) == files

    def test_not_an_artifact(self, stack: Stack, admin_token: str, uploaded: Uploaded) -> None:
        before = _artifact_ids(stack, admin_token)
        response = _upload(stack, admin_token, b"\x00" * 300_000, description="zeros")
        assert response.status_code == 400
        assert response.json()["error"]
        assert _artifact_ids(stack, admin_token) == before
