"""Serving signed links: object downloads (with byte ranges), direct uploads, configurations."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from common.core.errors import NotFound, ServiceError
from services.deployments.app.device import DeviceDeploymentsApp
from services.deployments.app.jobs import DirectUploadsApp
from services.deployments.artifact import write_configuration_artifact
from services.deployments.storage import InvalidKey, ObjectNotFound, Storage
from services.deployments.storage.signing import URLSigner

__all__ = ["ARTIFACT_CONTENT_TYPE", "Download", "DownloadsApp", "RangeNotSatisfiable"]

ARTIFACT_CONTENT_TYPE: Final = "application/vnd.mender-artifact"
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(ServiceError):
    """The requested byte range lies outside the object (416)."""

    status_code = 416

    def __init__(self, size: int) -> None:
        super().__init__(
            "requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
        )


@dataclass(frozen=True, slots=True)
class Download:
    """An object (or a byte range of it) ready to stream."""

    size: int
    start: int
    end: int  # inclusive
    partial: bool
    filename: str
    chunks: AsyncIterator[bytes]

    @property
    def length(self) -> int:
        """Bytes in the body."""
        return self.end - self.start + 1


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive range of a single-range `Range` header; None to send everything.

    Multiple ranges and unknown units are ignored (the whole object is sent), as RFC 9110
    allows; a range starting past the end raises `RangeNotSatisfiable`.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - count), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(size)
    return start, min(end, size - 1)


class DownloadsApp:
    """The unauthenticated, signed routes deployments serves itself."""

    def __init__(
        self,
        storage: Storage,
        signer: URLSigner,
        device: DeviceDeploymentsApp,
        uploads: DirectUploadsApp,
    ) -> None:
        self._storage = storage
        self._signer = signer
        self._device = device
        self._uploads = uploads

    async def open(
        self, key: str, *, path: str, query: Mapping[str, str], range_header: str | None
    ) -> Download:
        """Check a signed GET link and open the object (or the requested range)."""
        self._signer.verify(method="GET", path=path, query=query, extra_names=("filename",))
        try:
            size = await self._storage.size(key)
        except (ObjectNotFound, InvalidKey):
            raise NotFound("Resource not found") from None
        selected = byte_range(range_header, size)
        start, end = selected if selected is not None else (0, size - 1)
        return Download(
            size=size,
            start=start,
            end=end,
            partial=selected is not None,
            filename=query.get("filename", ""),
            chunks=self._storage.open_stream(key, start=start, end=end + 1),
        )

    async def receive(
        self, key: str, *, path: str, query: Mapping[str, str], chunks: AsyncIterable[bytes]
    ) -> None:
        """Check a signed PUT link and store the body for its upload intent."""
        self._signer.verify(method="PUT", path=path, query=query)
        try:
            await self._uploads.receive(key, chunks)
        except InvalidKey:
            raise NotFound("upload not found") from None

    async def configuration(
        self,
        *,
        path: str,
        query: Mapping[str, str],
        deployment_id: str,
        device_type: str,
        device_id: str,
    ) -> bytes:
        """Check a signed configuration link and build the `mender-configure` artifact."""
        deployment, _ = await self._device.configuration_artifact_source(
            method="GET",
            path=path,
            query=dict(query),
            deployment_id=deployment_id,
            device_id=device_id,
        )
        configuration: Any = {}
        if deployment.configuration:
            try:
                configuration = json.loads(deployment.configuration)
            except ValueError:
                configuration = {}
        if not isinstance(configuration, dict):
            configuration = {}
        return write_configuration_artifact(
            name=deployment.artifact_name, device_type=device_type, configuration=configuration
        )
