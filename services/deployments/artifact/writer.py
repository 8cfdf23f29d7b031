"""Writes Mender artifacts (format version 3), as `mender-artifact write module-image` does.

Layout of the outer (uncompressed) tar, in order: `version`, `manifest` (sha256 of every
payload file as `data/0000/<name>`, then of `header.tar.gz` and `version`),
`header.tar.gz` (`header-info`, `headers/0000/type-info`, optional `headers/0000/meta-data`)
and `data/0000.tar.gz` (the payload files, flat). Payload data is streamed through temporary
files, so large files never sit in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

__all__ = [
    "CONFIGURE_PROVIDES",
    "CONFIGURE_TYPE",
    "PAYLOAD_FILE_NAME",
    "PayloadFile",
    "write_artifact",
    "write_configuration_artifact",
    "write_single_file_artifact",
]

CONFIGURE_TYPE: Final = "mender-configure"
CONFIGURE_PROVIDES: Final = "data-partition.mender-configure.version"
# NOTE: the characters mender-artifact accepts in payload file names.
PAYLOAD_FILE_NAME: Final = re.compile(r"[A-Za-z0-9_.,-]{1,255}")
_VERSION: Final = b'{"format":"mender","version":3}'
_COPY_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PayloadFile:
    """A file to put in the payload: its name and either its bytes or a path to read."""

    name: str
    content: bytes | Path

    def size(self) -> int:
        """Its size in bytes."""
        return len(self.content) if isinstance(self.content, bytes) else self.content.stat().st_size

    def open(self) -> BinaryIO:
        """A binary reader of its content."""
        if isinstance(self.content, bytes):
            return io.BytesIO(self.content)
        return self.content.open("rb")


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256_of(payload: PayloadFile) -> str:
    digest = hashlib.sha256()
    with payload.open() as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _info(
    name: str, size: int, *, mtime: int, mode: int = 0o600, owner: bool = True
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    if owner:
        info.uname = info.gname = "root"
    return info


def _add(archive: tarfile.TarFile, info: tarfile.TarInfo, fileobj: IO[bytes]) -> None:
    archive.addfile(info, fileobj)


def _header_tar_gz(
    *,
    name: str,
    device_types: Sequence[str],
    payload_type: str,
    provides: Mapping[str, str],
    clears_provides: Sequence[str],
    meta_data: Mapping[str, Any] | None,
    mtime: int,
) -> bytes:
    header_info = _compact(
        {
            "payloads": [{"type": payload_type}],
            "artifact_provides": {"artifact_name": name},
            "artifact_depends": {"device_type": list(device_types)},
        }
    )
    type_info = _compact(
        {
            "type": payload_type,
            "artifact_provides": dict(provides),
            "clears_artifact_provides": list(clears_provides),
        }
    )
    members = [("header-info", header_info), ("headers/0000/type-info", type_info)]
    if meta_data is not None:
        members.append(("headers/0000/meta-data", _compact(dict(meta_data))))
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for member, content in members:
                _add(
                    archive, _info(member, len(content), mtime=0, owner=False), io.BytesIO(content)
                )
    return raw.getvalue()


def _data_tar_gz(files: Sequence[PayloadFile], out: BinaryIO, *, mtime: int) -> None:
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=mtime) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for payload in files:
                with payload.open() as handle:
                    _add(
                        archive,
                        _info(payload.name, payload.size(), mtime=mtime, mode=0o644),
                        handle,
                    )


def write_artifact(
    out: BinaryIO,
    *,
    name: str,
    device_types: Sequence[str],
    payload_type: str,
    provides: Mapping[str, str],
    clears_provides: Sequence[str],
    files: Sequence[PayloadFile] = (),
    meta_data: Mapping[str, Any] | None = None,
    mtime: int | None = None,
) -> None:
    """Write a one-payload module-image artifact to `out`."""
    for payload in files:
        if not PAYLOAD_FILE_NAME.fullmatch(payload.name):
            raise ValueError(f"invalid payload file name {payload.name!r}")
    if len({p.name for p in files}) != len(files):
        raise ValueError("payload file names must be unique")
    stamp = int(time.time()) if mtime is None else mtime
    header = _header_tar_gz(
        name=name,
        device_types=device_types,
        payload_type=payload_type,
        provides=provides,
        clears_provides=clears_provides,
        meta_data=meta_data,
        mtime=stamp,
    )
    manifest_lines = [f"{_sha256_of(p)}  data/0000/{p.name}\n" for p in files]
    manifest_lines.append(f"{hashlib.sha256(header).hexdigest()}  header.tar.gz\n")
    manifest_lines.append(f"{hashlib.sha256(_VERSION).hexdigest()}  version\n")
    manifest = "".join(manifest_lines).encode()
    with tempfile.TemporaryFile() as data:
        _data_tar_gz(files, data, mtime=stamp)
        data_size = data.tell()
        data.seek(0)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            _add(
                archive, _info("version", len(_VERSION), mtime=0, owner=False), io.BytesIO(_VERSION)
            )
            _add(
                archive,
                _info("manifest", len(manifest), mtime=0, owner=False),
                io.BytesIO(manifest),
            )
            _add(archive, _info("header.tar.gz", len(header), mtime=stamp), io.BytesIO(header))
            _add(archive, _info("data/0000.tar.gz", data_size, mtime=stamp), data)


def write_single_file_artifact(
    out: BinaryIO,
    *,
    name: str,
    device_types: Sequence[str],
    source: Path,
    filename: str,
    dest_dir: str,
    permissions: str = "644",
    mtime: int | None = None,
) -> None:
    """A `single-file` update module artifact, as `single-file-artifact-gen` makes it.

    The payload holds `dest_dir`, `filename` and `permissions` (one line each) and the file.
    """
    write_artifact(
        out,
        name=name,
        device_types=device_types,
        payload_type="single-file",
        provides={"rootfs-image.single-file.version": name},
        clears_provides=["rootfs-image.single-file.*"],
        files=[
            PayloadFile("dest_dir", f"{dest_dir}\n".encode()),
            PayloadFile("filename", f"{filename}\n".encode()),
            PayloadFile("permissions", f"{permissions}\n".encode()),
            PayloadFile(filename, source),
        ],
        mtime=mtime,
    )


def write_configuration_artifact(
    *, name: str, device_type: str, configuration: Mapping[str, Any], mtime: int | None = None
) -> bytes:
    """The `mender-configure` artifact of a configuration deployment (small, in memory)."""
    out = io.BytesIO()
    write_artifact(
        out,
        name=name,
        device_types=[device_type],
        payload_type=CONFIGURE_TYPE,
        provides={CONFIGURE_PROVIDES: name},
        clears_provides=["data-partition.mender-configure.*"],
        meta_data=configuration,
        mtime=mtime,
    )
    return out.getvalue()
