"""Builders and parsing helpers of the artifact tests.

Real artifacts come from the mender-artifact tool (`Tool`); synthetic ones are packed here with
`tarfile` to cover what the tool never writes: other tar flavours, lying manifests and
malformed structure.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.deployments.artifact import ArtifactError, ArtifactMeta, ArtifactParser

MENDER_ARTIFACT = shutil.which("mender-artifact")
FILE_DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def parse(data: bytes, chunk: int | None = None, **kwargs: int) -> ArtifactMeta:
    """Feed `data` in pieces of `chunk` bytes (all at once when None) and finish."""
    parser = ArtifactParser(**kwargs)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        parser.feed(data[start : start + step])
    return parser.finish()


def parse_error(data: bytes, chunk: int | None = None, **kwargs: int) -> str:
    """The message the reader refuses `data` with."""
    with pytest.raises(ArtifactError) as info:
        parse(data, chunk, **kwargs)
    return str(info.value)


def sha256(data: bytes) -> str:
    """The hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Tool:
    """Writes artifacts with mender-artifact into one directory."""

    workdir: Path
    files: dict[str, bytes]

    def path(self, name: str) -> str:
        return str(self.workdir / name)

    def write(self, *args: str) -> bytes:
        assert MENDER_ARTIFACT is not None
        out = self.workdir / f"out-{len(list(self.workdir.glob('out-*')))}.mender"
        subprocess.run(
            [MENDER_ARTIFACT, "write", *args, "-o", str(out)],
            check=True,
            capture_output=True,
            cwd=self.workdir,
        )
        return out.read_bytes()

    def read(self, artifact: bytes) -> str:
        assert MENDER_ARTIFACT is not None
        source = self.workdir / "to-read.mender"
        source.write_bytes(artifact)
        done = subprocess.run(
            [MENDER_ARTIFACT, "read", str(source)], check=True, capture_output=True, text=True
        )
        return done.stdout


def members(artifact: bytes) -> list[tuple[str, bytes]]:
    """The outer members of an artifact with their content, in order."""
    with tarfile.open(fileobj=io.BytesIO(artifact)) as tar:
        result = []
        for info in tar.getmembers():
            extracted = tar.extractfile(info)
            assert extracted is not None
            result.append((info.name, extracted.read()))
        return result


def offsets(artifact: bytes) -> dict[str, int]:
    """Where each outer member's content starts."""
    with tarfile.open(fileobj=io.BytesIO(artifact)) as tar:
        return {info.name: info.offset_data for info in tar.getmembers()}


def tar_bytes(
    entries: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, mtime: float = 1e9
) -> bytes:
    """A tar of `entries` (name, content) in the given format."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


Payload = tuple[bytes, dict[str, bytes]]  # type-info, then the files
APP_TYPE_INFO = b'{"type":"app","artifact_provides":{"app.version":"1"}}'


def payload_type(type_info: bytes) -> str:
    """The type header-info declares for a payload: the type-info's, if it has a usable one."""
    try:
        declared = json.loads(type_info).get("type")
    except (ValueError, AttributeError):
        return "app"
    return declared if isinstance(declared, str) else "app"


def synthetic(
    files: dict[str, bytes] | None = None,
    *,
    payloads: list[Payload] | None = None,
    fmt: int = tarfile.USTAR_FORMAT,
    mtime: float = 1e9,
    version: bytes = b'{"format":"mender","version":3}',
    type_info: bytes = APP_TYPE_INFO,
    header_extra: list[tuple[str, bytes]] | None = None,
    edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]] | None = None,
) -> bytes:
    """A v3 artifact with gzip payloads; `edit` changes the outer members before packing."""
    payloads = payloads or [(type_info, files or {})]
    info = {
        "payloads": [{"type": payload_type(info)} for info, _ in payloads],
        "artifact_provides": {"artifact_name": "synthetic"},
        "artifact_depends": {"device_type": ["dev"]},
    }
    header_files = [("header-info", json.dumps(info).encode()), *(header_extra or [])]
    header_files += [(f"headers/{n:04d}/type-info", info) for n, (info, _) in enumerate(payloads)]
    header = gzip.compress(tar_bytes(header_files, fmt))
    listed = {"version": version, "header.tar.gz": header}
    data_members = []
    for n, (_, payload_files) in enumerate(payloads):
        data_members.append(
            (f"data/{n:04d}.tar.gz", gzip.compress(tar_bytes([*payload_files.items()], fmt, mtime)))
        )
        listed |= {f"data/{n:04d}/{name}": content for name, content in payload_files.items()}
    manifest = "".join(f"{sha256(content)}  {path}\n" for path, content in sorted(listed.items()))
    entries = [
        ("version", version),
        ("manifest", manifest.encode()),
        ("header.tar.gz", header),
        *data_members,
    ]
    return tar_bytes(edit(entries) if edit else entries, fmt)


def replace(
    name: str, content: bytes
) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    def edit(entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, content if n == name else c) for n, c in entries]

    return edit


def edit_manifest(
    change: Callable[[str], str],
) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    def edit(entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, change(c.decode()).encode() if n == "manifest" else c) for n, c in entries]

    return edit
