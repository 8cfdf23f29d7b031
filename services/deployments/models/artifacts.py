"""Artifacts ("images" in Mender's storage): a parsed Mender artifact plus user metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from services.deployments.models.base import Model

__all__ = ["Artifact", "ArtifactInfo", "ArtifactMeta", "Update", "UpdateFile"]


class ArtifactInfo(Model):
    """Artifact format and version (`{"format": "mender", "version": 3}`)."""

    format: str = "mender"
    version: int = 3


class UpdateFile(Model):
    """One payload file."""

    name: str
    checksum: str = ""
    size: int = 0
    date: datetime | None = None


class Update(Model):
    """One payload: its type, files and optional meta-data document."""

    type: str | None = None
    files: list[UpdateFile] = Field(default_factory=list)
    meta_data: dict[str, Any] | None = None


class ArtifactMeta(Model):
    """What the artifact's headers say.

    `provides` and `depends` merge the header-level values with every payload's type-info;
    `depends` always includes `device_type` (the compatible device types).
    """

    name: str
    device_types_compatible: list[str]
    info: ArtifactInfo = ArtifactInfo()
    signed: bool = False
    updates: list[Update] = Field(default_factory=list)
    provides: dict[str, str] = Field(default_factory=dict)
    depends: dict[str, Any] = Field(default_factory=dict)
    clears_provides: list[str] = Field(default_factory=list)

    @property
    def update_types(self) -> list[str]:
        """The payload types, without duplicates, in order."""
        seen: list[str] = []
        for update in self.updates:
            if update.type and update.type not in seen:
                seen.append(update.type)
        return seen


class Artifact(Model):
    """A stored artifact."""

    id: str
    description: str = ""
    meta: ArtifactMeta
    size: int
    modified: datetime

    @property
    def name(self) -> str:
        """The artifact name (release name)."""
        return self.meta.name
