"""The error the artifact reader raises for any artifact it refuses."""

from __future__ import annotations

__all__ = ["ArtifactError"]


class ArtifactError(Exception):
    """The artifact is malformed, corrupt, truncated or disagrees with its manifest."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
