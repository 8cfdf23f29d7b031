"""A payload: what the headers say of it, and its `data/NNNN.tar*` member hashed as it streams."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from services.deployments.artifact.compression import decoder_for
from services.deployments.artifact.errors import ArtifactError
from services.deployments.artifact.json_checks import merge_json
from services.deployments.artifact.manifest import Checksum, Manifest
from services.deployments.artifact.meta import Update, UpdateFile
from services.deployments.artifact.tar import TarMember, TarStream

__all__ = ["Payload", "PayloadMember"]

# NOTE: the character set mender-artifact's reader allows in payload file names.
_PAYLOAD_FILE_NAME: Final = re.compile(r"[A-Za-z0-9_.,-]+")


@dataclass(slots=True)
class Payload:
    """One payload as collected from the headers and the data member."""

    header_type: str | None
    type_info: dict[str, Any] | None = None
    meta_data: dict[str, Any] | None = None
    files_list: list[str] | None = None  # version 2 only
    augment_header_type: str | None = None
    augment_type_info: dict[str, Any] | None = None
    augment_meta_data: dict[str, Any] | None = None
    manifest_files: list[str] = field(default_factory=list)
    allowed_files: set[str] = field(default_factory=set)
    received: dict[str, UpdateFile] = field(default_factory=dict)
    data_seen: bool = False

    def listed_files(self, version: int) -> list[str]:
        """The original payload files: the header's list (version 2) or the manifest's."""
        return (self.files_list if version == 2 else self.manifest_files) or []

    def update(
        self, index: int, *, version: int
    ) -> tuple[Update, dict[str, str], dict[str, Any], list[str]]:
        """The payload as an `Update`, with its own provides, depends and clears-provides."""
        info = self.type_info or {}
        augment = self.augment_type_info or {}
        # The payload type comes from type-info (the augmented one first), falling back to
        # header-info, whose type rootfs-image artifacts leave empty in type-info.
        candidates = (
            augment.get("type"),
            self.augment_header_type,
            info.get("type"),
            self.header_type,
        )
        payload_type = next((item for item in candidates if item), self.header_type)
        provides: dict[str, str] = dict(info.get("artifact_provides") or {})
        provides.update(augment.get("artifact_provides") or {})
        depends = merge_json(
            info.get("artifact_depends") or {},
            augment.get("artifact_depends") or {},
            "artifact_depends",
        )
        clears = augment.get("clears_artifact_provides")
        if clears is None:
            clears = info.get("clears_artifact_provides") or []
        try:
            meta_data = merge_json(self.meta_data or {}, self.augment_meta_data or {}, "meta-data")
        except RecursionError:
            raise ArtifactError(f"headers/{index:04d}/meta-data is nested too deeply") from None
        # NOTE: Mender stores only the original payload files, not the augmented ones
        # (which are still verified).
        files = []
        for name in self.listed_files(version):
            received = self.received.get(name)
            if received is None:
                raise ArtifactError(f"data/{index:04d}/{name} is missing from the artifact")
            files.append(received)
        update = Update(type=payload_type, files=files, meta_data=[meta_data] if meta_data else [])
        return update, provides, depends, list(clears)


class PayloadMember:
    """Streams one `data/NNNN.tar*` member: decompress, split into files, hash each file."""

    def __init__(
        self,
        payload: Payload,
        index: int,
        label: str,
        suffix: str,
        *,
        manifest: Manifest,
        version: int,
    ) -> None:
        files = _PayloadFiles(payload, index, label, manifest=manifest, version=version)
        self._tar = TarStream(files, label)
        self._decoder = decoder_for(suffix, self._tar.feed, label)

    def data(self, chunk: memoryview) -> None:
        """The next piece of the compressed member."""
        self._decoder.feed(chunk)

    def end(self) -> None:
        """Check that the member's compression and tar ended properly."""
        self._decoder.close()
        self._tar.close()


class _PayloadFiles:
    """The files inside one payload tar, each hashed as it streams past."""

    def __init__(
        self, payload: Payload, index: int, label: str, *, manifest: Manifest, version: int
    ) -> None:
        self._payload = payload
        self._index = index
        self._label = label
        self._manifest = manifest
        self._listed_by = "header" if version == 2 else "manifest"
        self._names: set[str] = set()
        self._name = ""
        self._entry: Checksum | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._mtime = 0.0

    def begin(self, member: TarMember) -> None:
        if member.kind != "file":
            raise ArtifactError(f"{self._label}: unexpected {member.describe()} {member.name}")
        name = member.name
        if name in self._names:
            raise ArtifactError(f"{self._label} contains {name} twice")
        self._names.add(name)
        if name not in self._payload.allowed_files:
            raise ArtifactError(
                f"{self._label} contains {name}, which the {self._listed_by} does not list"
            )
        if _PAYLOAD_FILE_NAME.fullmatch(name) is None:
            raise ArtifactError(f"{self._label}: file name {name!r} has forbidden characters")
        self._entry = self._manifest.expect(f"data/{self._index:04d}/{name}")
        self._name = name
        self._hash = hashlib.sha256()
        self._size = member.size
        self._mtime = member.mtime

    def data(self, chunk: memoryview) -> None:
        self._hash.update(chunk)

    def end(self) -> None:
        assert self._entry is not None
        path = f"data/{self._index:04d}/{self._name}"
        checksum = self._hash.hexdigest()
        self._entry.check(path, checksum)
        try:
            date = datetime.fromtimestamp(self._mtime, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ArtifactError(f"{path}: modification time out of range") from None
        self._payload.received[self._name] = UpdateFile(
            name=self._name, checksum=checksum, size=self._size, date=date
        )
        self._entry = None
