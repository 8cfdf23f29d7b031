"""S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph RGW).

Objects live in one bucket under their key. Uploads stream as multipart uploads, one part
buffered at a time; links are SigV4 query-presigned URLs that devices use directly, signed
for the host under which they reach the object store (`external_url`), which may differ
from the endpoint this service talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import quote

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from services.deployments.storage import (
    Link,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    StoredObject,
    validate_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["ARTIFACT_CONTENT_TYPE", "DEFAULT_PART_SIZE", "S3Storage"]

_log: Final = logging.getLogger(__name__)

ARTIFACT_CONTENT_TYPE: Final = "application/vnd.mender-artifact"
DEFAULT_PART_SIZE: Final = 8 * 1024 * 1024
# S3's own bounds: every part but the last is at least 5 MiB, at most 5 GiB, 10 000 parts.
_MIN_PART: Final = 5 * 1024 * 1024
_MAX_PART: Final = 5 * 1024 * 1024 * 1024
_MAX_PARTS: Final = 10_000
# SigV4 query signatures are valid for at most seven days.
_MAX_PRESIGN: Final = 7 * 24 * 3600
_READ_CHUNK: Final = 256 * 1024
_NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "NotFound", "404"})
_BUCKET_MISSING_CODES: Final = frozenset({"NoSuchBucket", "NotFound", "404"})
_BUCKET_EXISTS_CODES: Final = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_INVALID_RANGE: Final = "InvalidRange"
_NO_SUCH_UPLOAD: Final = "NoSuchUpload"
# What a call to S3 raises when it fails (as opposed to a bug in the caller).
_FAILURES: Final = (ClientError, BotoCoreError, aiohttp.ClientError)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _storage_error(operation: str, exc: Exception, key: str | None = None) -> StorageError:
    """The Storage error for a botocore or transport failure (missing `key` → not found)."""
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if key is not None and code in _NOT_FOUND_CODES:
            return ObjectNotFound(key)
        return StorageUnavailable(f"S3 {operation} failed: {code or exc}")
    return StorageUnavailable(f"S3 {operation} failed: {exc}")


@contextlib.contextmanager
def _translate(operation: str, key: str | None = None) -> Iterator[None]:
    """Raise the Storage error matching any S3 failure inside the block."""
    try:
        yield
    except _FAILURES as exc:
        raise _storage_error(operation, exc, key) from exc


def _content_disposition(filename: str) -> str:
    """`attachment; filename="…"`, safe for a response header whatever the name holds."""
    # Control characters (CR/LF above all) must never reach a header; quotes are escaped.
    printable = "".join(ch for ch in filename if ch.isprintable())
    fallback = printable.encode("ascii", "replace").decode("ascii")
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    if printable.isascii():
        return f'attachment; filename="{quoted}"'
    # RFC 6266: an ASCII fallback plus the exact name, percent-encoded UTF-8.
    return f"attachment; filename=\"{quoted}\"; filename*=UTF-8''{quote(printable, safe='')}"


def _range_header(start: int, end: int | None) -> str | None:
    if end is None:
        return None if start == 0 else f"bytes={start}-"
    return f"bytes={start}-{end - 1}"


class _PartBuffer:
    """Chunks waiting to become a part, joined with a single copy when the part is taken."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self.size = 0

    def append(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self.size += len(chunk)

    def take(self, count: int) -> bytes:
        """Remove and return the first `count` (at most `size`) bytes."""
        taken: list[bytes] = []
        needed = count
        while needed and self._chunks:
            head = self._chunks[0]
            if len(head) <= needed:
                taken.append(self._chunks.popleft())
                needed -= len(head)
            else:
                taken.append(head[:needed])
                self._chunks[0] = head[needed:]
                needed = 0
        self.size -= count - needed
        return b"".join(taken)


class S3Storage:
    """Stores objects in one S3 bucket; `start()`/`close()` (or `async with`) own the client."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        bucket: str,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        external_url: str | None = None,
        force_path_style: bool = True,
        create_bucket: bool = False,
        part_size: int = DEFAULT_PART_SIZE,
        content_type: str = ARTIFACT_CONTENT_TYPE,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        max_connections: int = 10,
        verify_tls: bool | str = True,
    ) -> None:
        if not _MIN_PART <= part_size <= _MAX_PART:
            raise ValueError(f"part_size must be between {_MIN_PART} and {_MAX_PART} bytes")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        self._endpoint_url = endpoint_url
        self._external_url = external_url
        self._bucket = bucket
        self._region = region
        self._create_bucket = create_bucket
        self._part_size = part_size
        self._content_type = content_type
        self._verify = verify_tls
        # Without explicit keys botocore's default chain applies (environment, IAM role).
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path" if force_path_style else "auto"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_connections,
            # Many S3-compatible servers reject the CRC trailers botocore now adds by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._presigner: S3Client | None = None
        self._aborts: set[asyncio.Task[None]] = set()

    @property
    def bucket(self) -> str:
        """The bucket holding the objects."""
        return self._bucket

    async def start(self) -> None:
        """Open the clients and, if configured, create the bucket when it does not exist."""
        if self._stack is not None:
            return
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                self._session.client(
                    "s3", endpoint_url=self._endpoint_url, config=self._config, verify=self._verify
                )
            )
            # Signing needs no connection: a second client only fixes the host in the links.
            if self._external_url and self._external_url != self._endpoint_url:
                self._presigner = await stack.enter_async_context(
                    self._session.client("s3", endpoint_url=self._external_url, config=self._config)
                )
            else:
                self._presigner = self._client
            self._stack = stack
            if self._create_bucket:
                await self._ensure_bucket()
        except BaseException:
            self._stack = None
            self._client = self._presigner = None
            await stack.aclose()
            raise

    async def close(self) -> None:
        """Let pending multipart aborts finish, then close the clients."""
        if self._aborts:
            await asyncio.gather(*self._aborts, return_exceptions=True)
        stack, self._stack = self._stack, None
        self._client = self._presigner = None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _s3(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3Storage is not started")
        return self._client

    async def _ensure_bucket(self) -> None:
        client = self._s3()
        try:
            await client.head_bucket(Bucket=self._bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in _BUCKET_MISSING_CODES:
                raise _storage_error("HeadBucket", exc) from exc
        except _FAILURES as exc:
            raise _storage_error("HeadBucket", exc) from exc
        extra: dict[str, Any] = {}
        # us-east-1 is the one region that must not be named as a location constraint.
        if self._region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await client.create_bucket(Bucket=self._bucket, **extra)
        except ClientError as exc:
            # Another replica may have created it between the two calls.
            if _error_code(exc) not in _BUCKET_EXISTS_CODES:
                raise _storage_error("CreateBucket", exc) from exc
        except _FAILURES as exc:
            raise _storage_error("CreateBucket", exc) from exc
        _log.info("created S3 bucket %s", self._bucket)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, size_limit: int) -> int:
        """Upload the chunks as one object, multipart once they exceed one part."""
        validate_key(key)
        client = self._s3()
        # Keep within S3's 10 000 parts even for limits beyond 10 000 default-sized parts.
        part_size = max(self._part_size, -(-size_limit // _MAX_PARTS))
        buffer = _PartBuffer()
        size = 0
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []

        async def _send_part(data: bytes) -> None:
            nonlocal upload_id
            if upload_id is None:
                with _translate("CreateMultipartUpload"):
                    created = await client.create_multipart_upload(
                        Bucket=self._bucket, Key=key, ContentType=self._content_type
                    )
                upload_id = created["UploadId"]
            number = len(parts) + 1
            with _translate("UploadPart"):
                uploaded = await client.upload_part(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
            parts.append({"ETag": uploaded["ETag"], "PartNumber": number})

        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > size_limit:
                    raise ObjectTooLarge(f"object exceeds the limit of {size_limit} bytes")
                buffer.append(chunk)
                while buffer.size >= part_size:
                    await _send_part(buffer.take(part_size))
            if upload_id is None:
                with _translate("PutObject"):
                    await client.put_object(
                        Bucket=self._bucket,
                        Key=key,
                        Body=buffer.take(buffer.size),
                        ContentType=self._content_type,
                    )
            else:
                if buffer.size:
                    await _send_part(buffer.take(buffer.size))
                with _translate("CompleteMultipartUpload"):
                    await client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
        except BaseException:
            if upload_id is not None:
                await self._abort(key, upload_id)
            raise
        return size

    async def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; runs to the end even if the caller is cancelled."""
        client = self._s3()

        async def _run() -> None:
            try:
                await client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            except _FAILURES as exc:
                # The parts stay until a bucket lifecycle rule expires them; nothing is
                # visible under the key either way.
                _log.warning("aborting multipart upload of %s failed: %s", key, exc)

        task = asyncio.get_running_loop().create_task(_run())
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)
        await asyncio.shield(task)

    async def open_stream(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream `[start, end)` of the object with a ranged GetObject."""
        validate_key(key)
        if start < 0 or (end is not None and end < 0):
            raise ValueError("byte offsets must not be negative")
        client = self._s3()
        if end is not None and end <= start:
            # S3 has no empty range: check that the object exists and yield nothing.
            await self.size(key)
            return
        extra: dict[str, Any] = {}
        byte_range = _range_header(start, end)
        if byte_range is not None:
            extra["Range"] = byte_range
        try:
            response = await client.get_object(Bucket=self._bucket, Key=key, **extra)
        except ClientError as exc:
            # A start at or past the end is an empty read, as on a file, not a failure.
            if _error_code(exc) == _INVALID_RANGE:
                return
            raise _storage_error("GetObject", exc, key) from exc
        except _FAILURES as exc:
            raise _storage_error("GetObject", exc, key) from exc
        body = response["Body"]
        # Entering yields the raw aiohttp response; read through the wrapper, which checks
        # the length. Leaving releases the connection even when the caller stops early.
        async with body:
            while True:
                with _translate("GetObject"):
                    data = await body.read(_READ_CHUNK)
                if not data:
                    break
                yield data

    async def size(self, key: str) -> int:
        """The object's ContentLength from HeadObject."""
        validate_key(key)
        with _translate("HeadObject", key):
            head = await self._s3().head_object(Bucket=self._bucket, Key=key)
        return head["ContentLength"]

    async def delete(self, key: str) -> None:
        """DeleteObject, which S3 answers the same whether or not the object existed."""
        validate_key(key)
        with _translate("DeleteObject"):
            await self._s3().delete_object(Bucket=self._bucket, Key=key)

    async def download_link(
        self,
        key: str,
        *,
        expire: timedelta,
        filename: str,
        external_url: str,  # noqa: ARG002 - links point at the object store, not deployments
    ) -> Link:
        """A presigned GET served as an attachment, signed for the external S3 host."""
        await self.size(key)
        seconds, when = self._expiry(expire)
        params = {
            "Bucket": self._bucket,
            "Key": key,
            "ResponseContentDisposition": _content_disposition(filename),
            "ResponseContentType": self._content_type,
        }
        uri = await self._presign("get_object", params, seconds=seconds, method="GET")
        return Link(uri=uri, expire=when, method="GET")

    async def upload_link(
        self,
        key: str,
        *,
        expire: timedelta,
        external_url: str,  # noqa: ARG002 - links point at the object store, not deployments
    ) -> Link:
        """A presigned PutObject; the uploader may send any content type."""
        validate_key(key)
        seconds, when = self._expiry(expire)
        params = {"Bucket": self._bucket, "Key": key}
        uri = await self._presign("put_object", params, seconds=seconds, method="PUT")
        return Link(uri=uri, expire=when, method="PUT")

    async def health_check(self) -> None:
        """HeadBucket must succeed."""
        with _translate("HeadBucket"):
            await self._s3().head_bucket(Bucket=self._bucket)

    async def list_objects(self) -> AsyncIterator[StoredObject]:
        """ListObjectsV2, a page of up to 1000 keys at a time."""
        paginator = self._s3().get_paginator("list_objects_v2")
        with _translate("ListObjectsV2"):
            async for page in paginator.paginate(Bucket=self._bucket):
                for item in page.get("Contents", []):
                    modified = item["LastModified"].astimezone(UTC)
                    yield StoredObject(key=item["Key"], size=item["Size"], modified=modified)

    async def remove_stale_partials(self, *, idle_since: datetime) -> list[StoredObject]:
        """Abort the multipart uploads that received no part since `idle_since`."""
        with _translate("ListMultipartUploads"):
            pages = self._s3().get_paginator("list_multipart_uploads").paginate(Bucket=self._bucket)
            uploads = [u async for page in pages for u in page.get("Uploads", [])]
        removed = []
        for upload in uploads:
            if upload["Initiated"] < idle_since:
                aborted = await self._abort_if_idle(
                    upload["Key"], upload["UploadId"], upload["Initiated"], idle_since
                )
                if aborted is not None:
                    removed.append(aborted)
        return removed

    async def _abort_if_idle(
        self, key: str, upload_id: str, initiated: datetime, idle_since: datetime
    ) -> StoredObject | None:
        """Abort one multipart upload unless a part arrived since `idle_since`."""
        client = self._s3()
        try:
            pages = client.get_paginator("list_parts").paginate(
                Bucket=self._bucket, Key=key, UploadId=upload_id
            )
            parts = [p async for page in pages for p in page.get("Parts", [])]
            last = max([initiated, *(p["LastModified"] for p in parts)])
            if last >= idle_since:
                return None
            await client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) == _NO_SUCH_UPLOAD:
                return None  # completed, aborted or removed by another replica meanwhile
            raise _storage_error("AbortMultipartUpload", exc) from exc
        except _FAILURES as exc:
            raise _storage_error("AbortMultipartUpload", exc) from exc
        size = sum(p["Size"] for p in parts)
        return StoredObject(key=key, size=size, modified=last.astimezone(UTC))

    @staticmethod
    def _expiry(expire: timedelta) -> tuple[int, datetime]:
        seconds = min(max(1, int(expire.total_seconds())), _MAX_PRESIGN)
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
        return seconds, when

    async def _presign(
        self, operation: str, params: dict[str, str], *, seconds: int, method: str
    ) -> str:
        if self._presigner is None:
            raise RuntimeError("S3Storage is not started")
        with _translate(f"presign {operation}"):
            return await self._presigner.generate_presigned_url(
                operation, Params=params, ExpiresIn=seconds, HttpMethod=method
            )
