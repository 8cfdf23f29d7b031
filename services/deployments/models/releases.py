"""Releases: the artifacts sharing one artifact name, plus user tags and notes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from services.deployments.models.base import Model

__all__ = ["Release", "ReleaseArtifact"]


class ReleaseArtifact(Model):
    """What a release keeps of each of its artifacts (for filtering)."""

    id: str
    description: str = ""
    device_types: list[str] = Field(default_factory=list)
    update_types: list[str] = Field(default_factory=list)
    modified: datetime


class Release(Model):
    """A release; `artifacts` summarises its artifacts, in upload order."""

    name: str
    artifacts: list[ReleaseArtifact] = Field(default_factory=list)
    artifacts_count: int = 0
    modified: datetime
    tags: list[str] = Field(default_factory=list)
    notes: str = ""

    @property
    def device_types(self) -> list[str]:
        """Device types compatible with at least one artifact."""
        seen: list[str] = []
        for artifact in self.artifacts:
            seen.extend(t for t in artifact.device_types if t not in seen)
        return seen
