"""Local-filesystem storage: objects are files under a root directory.

Downloads and direct uploads go through deployments itself, on the unauthenticated route
`/api/devices/v1/deployments/download/objects/<key>` with an HMAC-signed, expiring query.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Final

from services.deployments.storage import (
    InvalidKey,
    Link,
    ObjectNotFound,
    ObjectTooLarge,
    StorageUnavailable,
    StoredObject,
    validate_key,
)
from services.deployments.storage.signing import URLSigner

__all__ = ["OBJECTS_PATH", "LocalStorage"]

# The route that serves objects (GET) and receives direct uploads (PUT).
OBJECTS_PATH: Final = "/api/devices/v1/deployments/download/objects/"
_CHUNK: Final = 256 * 1024
# Partial uploads live here; a leading dot can never be part of a valid key.
_PARTIAL_DIR: Final = ".partial"


def _write(handle: BinaryIO, chunk: bytes) -> None:
    """Write a chunk through to the file: its mtime tells the upload's last activity."""
    handle.write(chunk)
    handle.flush()


def _scan(directory: Path) -> list[tuple[Path, os.stat_result | None]]:
    """The entries of a directory: files with their stat, subdirectories with None.

    Symbolic links are left out, and so is a directory that does not exist (any more).
    """
    entries: list[tuple[Path, os.stat_result | None]] = []
    try:
        scan = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return entries
    with scan:
        for entry in scan:
            try:
                if entry.is_dir(follow_symlinks=False):
                    entries.append((Path(entry.path), None))
                elif entry.is_file(follow_symlinks=False):
                    entries.append((Path(entry.path), entry.stat(follow_symlinks=False)))
            except FileNotFoundError:  # removed meanwhile
                continue
    return entries


class LocalStorage:
    """Stores objects as files below `root` (created if missing)."""

    def __init__(self, root: Path, signer: URLSigner, *, chunk_size: int = _CHUNK) -> None:
        self._root = root.resolve()
        self._signer = signer
        self._chunk = chunk_size

    @property
    def root(self) -> Path:
        """The directory holding the objects."""
        return self._root

    def _path(self, key: str) -> Path:
        path = self._root.joinpath(*validate_key(key).split("/"))
        # Segments are already restricted; this guards against symlinked directories too.
        if not path.resolve().is_relative_to(self._root):
            raise InvalidKey(f"invalid object key {key!r}")
        return path

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, size_limit: int) -> int:
        """Write the chunks to a partial file, then move it into place atomically."""
        target = self._path(key)
        partial_dir = self._root / _PARTIAL_DIR
        partial = partial_dir / f"{uuid.uuid4().hex}.part"

        def _open() -> BinaryIO:
            partial_dir.mkdir(parents=True, exist_ok=True)
            return partial.open("wb")

        try:
            handle = await asyncio.to_thread(_open)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write to {partial_dir}: {exc}") from exc
        size = 0
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > size_limit:
                        raise ObjectTooLarge(f"object exceeds the limit of {size_limit} bytes")
                    await asyncio.to_thread(_write, handle, chunk)
            finally:
                await asyncio.to_thread(handle.close)

            def _commit() -> None:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, target)

            try:
                await asyncio.to_thread(_commit)
            except OSError as exc:  # e.g. the partial was swept away after idling too long
                raise StorageUnavailable(f"cannot store {key}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise
        return size

    async def open_stream(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Read the file in chunks from `start` up to (excluding) `end`."""
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                want = self._chunk if remaining is None else min(self._chunk, remaining)
                data = await asyncio.to_thread(handle.read, want)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            await asyncio.to_thread(handle.close)

    async def size(self, key: str) -> int:
        """The file's size."""
        path = self._path(key)
        try:
            stat = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return stat.st_size

    async def delete(self, key: str) -> None:
        """Remove the file if present."""
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            await asyncio.to_thread(path.unlink)

    async def download_link(
        self, key: str, *, expire: timedelta, filename: str, external_url: str
    ) -> Link:
        """A signed GET link on deployments' download route."""
        await self.size(key)
        when = datetime.now(UTC).replace(microsecond=0) + expire
        uri = self._signer.sign(
            base_url=external_url,
            method="GET",
            path=OBJECTS_PATH + key,
            expire=when,
            extra={"filename": filename},
        )
        return Link(uri=uri, expire=when, method="GET")

    async def upload_link(self, key: str, *, expire: timedelta, external_url: str) -> Link:
        """A signed PUT link on deployments' download route."""
        self._path(key)
        when = datetime.now(UTC).replace(microsecond=0) + expire
        uri = self._signer.sign(
            base_url=external_url, method="PUT", path=OBJECTS_PATH + key, expire=when
        )
        return Link(uri=uri, expire=when, method="PUT")

    async def list_objects(self) -> AsyncIterator[StoredObject]:
        """Walk the root one directory at a time, leaving out partial uploads."""
        directories = [self._root]
        while directories:
            directory = directories.pop()
            entries = await asyncio.to_thread(_scan, directory)
            for path, stat in entries:
                if stat is None:
                    if path != self._root / _PARTIAL_DIR:
                        directories.append(path)
                    continue
                yield StoredObject(
                    key=path.relative_to(self._root).as_posix(),
                    size=stat.st_size,
                    modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                )

    async def remove_stale_partials(self, *, idle_since: datetime) -> list[StoredObject]:
        """Unlink `.part` files not written to since `idle_since` (their mtime)."""
        partial_dir = self._root / _PARTIAL_DIR

        def _remove() -> list[StoredObject]:
            removed = []
            for path, stat in _scan(partial_dir):
                if stat is None or path.suffix != ".part":
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                if modified >= idle_since:
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:  # another replica was faster
                    continue
                key = f"{_PARTIAL_DIR}/{path.name}"
                removed.append(StoredObject(key=key, size=stat.st_size, modified=modified))
            return removed

        try:
            return await asyncio.to_thread(_remove)
        except OSError as exc:
            raise StorageUnavailable(f"cannot clean {partial_dir}: {exc}") from exc

    async def health_check(self) -> None:
        """The root directory must exist (it is created) and be writable."""

        def _check() -> None:
            self._root.mkdir(parents=True, exist_ok=True)
            if not os.access(self._root, os.W_OK):
                raise StorageUnavailable(f"{self._root} is not writable")

        try:
            await asyncio.to_thread(_check)
        except OSError as exc:
            raise StorageUnavailable(f"{self._root}: {exc}") from exc
