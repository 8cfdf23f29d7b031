"""Streaming, push-based reader for Mender artifacts (format versions 2 and 3).

An artifact is an uncompressed tar holding, in this order: `version`, `manifest` (sha256 of
every other file), optional `manifest.sig`, optional `manifest-augment`, `header.tar[.gz|.xz|
.zst]`, optional `header-augment.tar[...]`, then one `data/NNNN.tar[...]` per payload. The
parser is fed the upload chunk by chunk: payload bytes are hashed and dropped, and only the
small metadata files are kept in memory, each under a cap. `finish()` returns what Mender's
deployments service extracts (`getMetaFromArchive`) once every checksum has been verified.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, Final, Protocol

from services.deployments.artifact.errors import ArtifactError
from services.deployments.artifact.header import (
    Header,
    read_augment_header,
    read_header,
    unpack_header,
)
from services.deployments.artifact.json_checks import json_object, load_json
from services.deployments.artifact.manifest import Manifest
from services.deployments.artifact.meta import ArtifactMeta, Update
from services.deployments.artifact.payload import PayloadMember
from services.deployments.artifact.tar import TarMember, TarStream

__all__ = ["MAX_HEADER_SIZE", "ArtifactParser"]

MAX_HEADER_SIZE: Final = 10 * 1024 * 1024
"""Default cap on `header.tar*`, both as stored and once decompressed."""

_MAX_SMALL_FILE: Final = 1024 * 1024  # version, manifest, manifest.sig, manifest-augment

_DATA_MEMBER: Final = re.compile(r"data/([0-9]+)\.tar(|\.gz|\.xz|\.zst)")
_HEADER_MEMBER: Final = re.compile(r"header(-augment)?\.tar(|\.gz|\.xz|\.zst)")

_ST_VERSION: Final = "version"
_ST_MANIFEST: Final = "manifest"
_ST_HEADERS: Final = "headers"  # after the manifest, up to and including the header
_ST_AUGMENT: Final = "augment"  # the header-augment must come next
_ST_DATA: Final = "data"


class ArtifactParser:
    """Incremental artifact reader: `feed()` the bytes in any chunking, then `finish()`."""

    def __init__(self, *, max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._reader = _ArtifactReader(max_header_size=max_header_size)
        self._tar = TarStream(self._reader, "artifact", outer=True)
        self._error: ArtifactError | None = None
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        """Consume the next piece of the artifact; raises `ArtifactError` as soon as it can."""
        if self._finished:
            raise RuntimeError("feed() called after finish()")
        if self._error is not None:
            raise self._error
        if not chunk:
            return
        try:
            self._tar.feed(memoryview(chunk).cast("B"))
        except ArtifactError as exc:
            self._error = exc
            raise

    def finish(self) -> ArtifactMeta:
        """Check that the artifact is complete and consistent and return its metadata."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        if self._error is not None:
            raise self._error
        self._finished = True
        try:
            self._tar.close()
            return self._reader.result()
        except ArtifactError as exc:
            self._error = exc
            raise


class _MemberHandler(Protocol):
    def data(self, chunk: memoryview) -> None: ...

    def end(self) -> None: ...


class _Buffered:
    """Keeps one small member in memory and hands it over when complete."""

    def __init__(self, on_complete: Callable[[bytes], None]) -> None:
        self._buffer = bytearray()
        self._on_complete = on_complete

    def data(self, chunk: memoryview) -> None:
        self._buffer += chunk

    def end(self) -> None:
        self._on_complete(bytes(self._buffer))


class _ArtifactReader:
    """Receives the members of the outer tar and enforces the artifact's structure."""

    def __init__(self, *, max_header_size: int) -> None:
        self._max_header_size = max_header_size
        self._stage = _ST_VERSION
        self._handler: _MemberHandler | None = None
        self._version = 0
        self._format = ""
        self._version_raw = b""
        self._manifest = Manifest()
        self._has_augment = False
        self._signed = False
        self._header = Header()
        self._manifest_data: list[tuple[int, str]] = []
        self._augment_data: list[tuple[int, str]] = []

    # TarSink

    def begin(self, member: TarMember) -> None:
        name = member.name
        if member.kind != "file":
            raise ArtifactError(f"unexpected {member.describe()} in artifact: {name}")
        self._handler = self._open(name, member)

    def data(self, chunk: memoryview) -> None:
        assert self._handler is not None
        self._handler.data(chunk)

    def end(self) -> None:
        assert self._handler is not None
        handler, self._handler = self._handler, None
        handler.end()

    # structure

    def _open(self, name: str, member: TarMember) -> _MemberHandler:
        stage = self._stage
        if stage == _ST_VERSION:
            if name != "version":
                raise ArtifactError(f"artifact does not start with a version file (found {name})")
            return self._small(member, self._read_version)
        if stage == _ST_MANIFEST:
            if name != "manifest":
                raise ArtifactError(f"expected manifest after version, found {name}")
            return self._small(member, self._read_manifest)
        if stage == _ST_HEADERS:
            if name == "manifest.sig" and not self._signed and not self._has_augment:
                self._signed = True
                return self._small(member, lambda _raw: None)
            if name == "manifest-augment" and self._version == 3 and not self._has_augment:
                self._has_augment = True
                return self._small(member, self._read_augment_manifest)
            match = _HEADER_MEMBER.fullmatch(name)
            if match is not None and not match.group(1):
                self._stage = _ST_AUGMENT if self._has_augment else _ST_DATA
                return self._header_member(name, member, match.group(2), augment=False)
            raise ArtifactError(f"unexpected file {name} in artifact (expected the header)")
        if stage == _ST_AUGMENT:
            match = _HEADER_MEMBER.fullmatch(name)
            if match is None or not match.group(1):
                raise ArtifactError(f"expected header-augment after the header, found {name}")
            self._stage = _ST_DATA
            return self._header_member(name, member, match.group(2), augment=True)
        match = _DATA_MEMBER.fullmatch(name)
        if match is None:
            raise ArtifactError(f"unexpected file {name} in artifact")
        index = int(match.group(1))
        payloads = self._header.payloads
        if index >= len(payloads):
            raise ArtifactError(f"{name} does not belong to any payload")
        payload = payloads[index]
        if payload.data_seen:
            raise ArtifactError(f"duplicate payload {name}")
        payload.data_seen = True
        return PayloadMember(
            payload, index, name, match.group(2), manifest=self._manifest, version=self._version
        )

    def _small(self, member: TarMember, on_complete: Callable[[bytes], None]) -> _Buffered:
        if member.size > _MAX_SMALL_FILE:
            raise ArtifactError(f"{member.name} is too large ({member.size} bytes)")
        return _Buffered(on_complete)

    def _read_version(self, raw: bytes) -> None:
        info = json_object(load_json(raw, "version file"), "version file")
        fmt = info.get("format")
        version = info.get("version")
        if fmt != "mender":
            raise ArtifactError(f"unsupported artifact format: {fmt!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version not in (2, 3):
            raise ArtifactError(f"unsupported artifact version: {version!r}")
        self._format = fmt
        self._version = version
        self._version_raw = raw
        self._stage = _ST_MANIFEST

    def _read_manifest(self, raw: bytes) -> None:
        self._manifest_data = self._manifest.add(raw, "manifest")
        self._manifest.verify("version", self._version_raw)
        self._stage = _ST_HEADERS

    def _read_augment_manifest(self, raw: bytes) -> None:
        self._augment_data = self._manifest.add(raw, "manifest-augment")

    def _header_member(
        self, name: str, member: TarMember, suffix: str, *, augment: bool
    ) -> _Buffered:
        entry = self._manifest.expect(name)
        if member.size > self._max_header_size:
            raise ArtifactError(
                f"{name} is too large ({member.size} bytes, at most {self._max_header_size})"
            )

        def complete(raw: bytes) -> None:
            # Verify first, so a damaged header is reported as such and not as bad JSON.
            entry.check(name, hashlib.sha256(raw).hexdigest())
            files = unpack_header(raw, name, suffix, limit=self._max_header_size)
            if augment:
                read_augment_header(
                    name, files, payloads=self._header.payloads, listed=self._augment_data
                )
            else:
                self._header = read_header(
                    name, files, version=self._version, listed=self._manifest_data
                )

        return _Buffered(complete)

    # result

    def result(self) -> ArtifactMeta:
        """The artifact's metadata, once every member has been read and verified."""
        if self._stage != _ST_DATA:
            missing = {
                _ST_VERSION: "version file",
                _ST_MANIFEST: "manifest",
                _ST_HEADERS: "header",
                _ST_AUGMENT: "header-augment",
            }[self._stage]
            raise ArtifactError(f"artifact has no {missing}")
        missing_files = self._manifest.missing()
        if missing_files:
            raise ArtifactError(
                "manifest lists files missing from the artifact: " + ", ".join(missing_files)
            )
        header = self._header
        updates: list[Update] = []
        provides = dict(header.provides)
        depends: dict[str, Any] = dict(header.depends)
        clears: list[str] = []
        for index, payload in enumerate(header.payloads):
            update, payload_provides, payload_depends, payload_clears = payload.update(
                index, version=self._version
            )
            updates.append(update)
            if self._version != 3:
                continue
            for key, value in payload_provides.items():
                if key in provides:
                    raise ArtifactError(f"conflicting keys in the artifact provides: {key}")
                provides[key] = value
            for key, value in payload_depends.items():
                if key in depends:
                    raise ArtifactError(f"conflicting keys in the artifact depends: {key}")
                depends[key] = value
            clears.extend(payload_clears)
        if self._version != 3:
            # NOTE: Mender merges provides and depends for version 3 only, then always
            # records the compatible device types as a dependency.
            depends = {"device_type": list(header.device_types)}
        return ArtifactMeta(
            format=self._format,
            version=self._version,
            name=header.name,
            device_types_compatible=list(header.device_types),
            signed=self._signed,
            provides=provides,
            depends=depends,
            clears_provides=clears,
            updates=updates,
        )
