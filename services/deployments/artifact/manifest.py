"""The artifact's manifest: the sha256 of every other file, checked off as each arrives."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from services.deployments.artifact.errors import ArtifactError

__all__ = ["Checksum", "Manifest"]

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_PAYLOAD_PATH: Final = re.compile(r"data/([0-9]{4})/([^/]+)")


@dataclass(slots=True)
class Checksum:
    """One listed file: its expected sha256 (lower-case hex) and whether it was verified."""

    expected: str
    seen: bool = False

    def check(self, path: str, actual: str) -> None:
        """Mark the file verified if `actual` is the listed digest."""
        if actual != self.expected:
            raise ArtifactError(f"invalid checksum for {path}")
        self.seen = True


class Manifest:
    """The lines of `manifest` and `manifest-augment`, by path."""

    def __init__(self) -> None:
        self._checksums: dict[str, Checksum] = {}

    def add(self, raw: bytes, label: str) -> list[tuple[int, str]]:
        """Record every line of `label`; returns its payload files as (index, name), in order."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"{label} is not valid UTF-8") from None
        data_files: list[tuple[int, str]] = []
        for line in text.split("\n"):
            if not line:
                continue
            checksum, sep, path = line.partition("  ")
            if not sep or not path or _SHA256_HEX.fullmatch(checksum) is None:
                raise ArtifactError(f"garbled line in {label}: {line[:200]!r}")
            if path in self._checksums:
                raise ArtifactError(f"{label} lists {path} twice")
            self._checksums[path] = Checksum(expected=checksum.lower())
            if path.startswith("data/"):
                match = _PAYLOAD_PATH.fullmatch(path)
                if match is None:
                    raise ArtifactError(f"malformed {label} entry: {path}")
                data_files.append((int(match.group(1)), match.group(2)))
        return data_files

    def expect(self, path: str) -> Checksum:
        """The entry of a file about to be read: it must be listed and not seen before."""
        entry = self._checksums.get(path)
        if entry is None:
            raise ArtifactError(f"manifest does not list {path}")
        if entry.seen:
            raise ArtifactError(f"{path} appears twice in the artifact")
        return entry

    def verify(self, path: str, raw: bytes) -> None:
        """Check a file read whole against its entry."""
        self.expect(path).check(path, hashlib.sha256(raw).hexdigest())

    def missing(self) -> list[str]:
        """The listed files never verified, sorted."""
        return sorted(path for path, entry in self._checksums.items() if not entry.seen)
