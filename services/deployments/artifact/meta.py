"""What the reader returns: an artifact's metadata, its payloads and their files."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ArtifactMeta", "Update", "UpdateFile"]


@dataclass(frozen=True, slots=True)
class UpdateFile:
    """One payload file: its name, sha256 (hex), size in bytes and tar modification time."""

    name: str
    checksum: str
    size: int
    date: datetime


@dataclass(frozen=True, slots=True)
class Update:
    """One payload: its type, files and meta-data (a list of at most one object, as Mender)."""

    type: str | None
    files: list[UpdateFile]
    meta_data: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ArtifactMeta:
    """What an artifact declares, with provides and depends merged across its payloads."""

    format: str
    version: int
    name: str
    device_types_compatible: list[str]
    signed: bool
    provides: dict[str, str]
    depends: dict[str, Any]
    clears_provides: list[str]
    updates: list[Update]
