"""Artifact object storage: the interface every backend implements (local disk, S3).

Keys are `/`-separated paths made of safe segments (`object_key` builds them); artifacts live
under `<tenant>/<artifact id>` (just `<artifact id>` for the default tenant), as in Mender.
A backend never keeps a partial object: `put_stream` either stores every byte or nothing.
A crash can leave a partial upload behind, though (a `.part` file, an S3 multipart upload):
`remove_stale_partials` clears those once idle.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

__all__ = [
    "InvalidKey",
    "Link",
    "ObjectNotFound",
    "ObjectTooLarge",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "object_key",
    "validate_key",
]

_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_MAX_SEGMENTS: Final = 8


class StorageError(Exception):
    """Base of the errors a storage backend raises."""


class InvalidKey(StorageError, ValueError):
    """The key is not a safe relative path of allowed segments."""


class ObjectNotFound(StorageError):
    """No object is stored under the key."""


class ObjectTooLarge(StorageError):
    """The stream exceeded the size limit; nothing was stored."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached or refused the operation."""


@dataclass(frozen=True, slots=True)
class Link:
    """A time-limited URL to an object (download or upload)."""

    uri: str
    expire: datetime
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a listing tells about an object or a partial upload."""

    key: str
    size: int
    modified: datetime


def validate_key(key: str) -> str:
    """Return `key` if every segment is safe (no traversal, no empty or dot segments)."""
    segments = key.split("/")
    if not 1 <= len(segments) <= _MAX_SEGMENTS or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def object_key(tenant_id: str, *parts: str) -> str:
    """The key of an object owned by a tenant: `<tenant>/<parts…>` (no prefix for tenant "").

    A tenant id that is not a safe key segment (Mender's are hex strings, so this does not
    happen in practice) is replaced by a digest of it, so any id maps to its own directory.
    """
    if tenant_id and not _SEGMENT.fullmatch(tenant_id):
        tenant_id = "t-" + hashlib.sha256(tenant_id.encode()).hexdigest()
    return validate_key("/".join([tenant_id, *parts] if tenant_id else parts))


class Storage(Protocol):
    """Where artifact files are kept; every method is safe to call concurrently."""

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, size_limit: int) -> int:
        """Store the chunks under `key` and return the size; on any error nothing is kept.

        Raises `ObjectTooLarge` past `size_limit` bytes; an exception raised by `chunks`
        propagates after the partial object has been removed. An existing object is replaced.
        """
        ...

    def open_stream(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Iterate over the bytes `[start, end)` of the object (to its end when `end` is None).

        Raises `ObjectNotFound` on the first iteration when the object does not exist.
        """
        ...

    async def size(self, key: str) -> int:
        """Return the object's size in bytes; `ObjectNotFound` if it does not exist."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    async def download_link(
        self, key: str, *, expire: timedelta, filename: str, external_url: str
    ) -> Link:
        """A GET link valid for `expire`, served as an attachment named `filename`.

        `external_url` is the scheme://host[:port] under which this service's device API
        is reachable; backends that serve downloads through deployments build links on it,
        others (S3) ignore it. Raises `ObjectNotFound` when the object does not exist.
        """
        ...

    async def upload_link(self, key: str, *, expire: timedelta, external_url: str) -> Link:
        """A PUT link valid for `expire` that stores the request body under `key`."""
        ...

    async def health_check(self) -> None:
        """Raise `StorageUnavailable` when the backend cannot serve requests."""
        ...

    def list_objects(self) -> AsyncIterator[StoredObject]:
        """Iterate over every stored object (not partial uploads), in no particular order."""
        ...

    async def remove_stale_partials(self, *, idle_since: datetime) -> list[StoredObject]:
        """Remove the partial uploads with no activity since `idle_since`; return them.

        An upload in progress writes all the time; one idle that long was cut off. Safe to
        run from several replicas at once: what another one removed first is skipped.
        """
        ...
