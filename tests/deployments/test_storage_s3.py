"""The S3 storage backend against a real S3 server (SeaweedFS).

One backend and one bucket serve the session, as in production; every test works under its
own key prefix, so what a test asserts about the bucket is about that prefix only.
"""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aioboto3
import httpx
import pytest
from aiobotocore.config import AioConfig

from common.localstack.embedded import free_port
from services.deployments.storage import (
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    StorageUnavailable,
)
from services.deployments.storage.s3 import ARTIFACT_CONTENT_TYPE, S3Storage
from tests.deployments.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedS3

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

MIB: Final = 1024 * 1024
PART: Final = 5 * MIB
EXTERNAL_HOST: Final = "localhost"


def external_url(server: SeaweedS3) -> str:
    """The same server under another host name, as devices would reach it."""
    return f"http://{EXTERNAL_HOST}:{server.port}"


def make_storage(
    server: SeaweedS3,
    bucket: str,
    *,
    create_bucket: bool = True,
    part_size: int = PART,
    access_key_id: str = ACCESS_KEY_ID,
    secret_access_key: str | None = SECRET_ACCESS_KEY,
) -> S3Storage:
    """A backend on the test server, its links signed for the external host name."""
    return S3Storage(
        endpoint_url=server.endpoint,
        bucket=bucket,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        external_url=external_url(server),
        create_bucket=create_bucket,
        part_size=part_size,
        max_attempts=1,
    )


def new_bucket() -> str:
    return f"fleetport-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS server for the session."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def storage(s3_server: SeaweedS3) -> AsyncIterator[S3Storage]:
    """The backend under test; it creates its bucket at start."""
    async with make_storage(s3_server, new_bucket()) as backend:
        yield backend


@pytest.fixture(scope="session")
async def s3(s3_server: SeaweedS3) -> AsyncIterator[S3Client]:
    """A plain S3 client for checking what the backend left in the bucket."""
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name="us-east-1",
        config=AioConfig(s3={"addressing_style": "path"}, signature_version="s3v4"),
    ) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """The key prefix of one test (as a tenant id would be)."""
    return f"t{uuid.uuid4().hex[:12]}"


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that do not repeat within a part."""
    blocks = bytearray()
    counter = 0
    while len(blocks) < size:
        blocks += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(blocks[:size])


async def chunked(data: bytes, chunk: int = MIB) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk):
        yield data[offset : offset + chunk]


async def generated(total: int, chunk: int = MIB) -> AsyncIterator[bytes]:
    """`total` bytes made on the fly, never held at once."""
    for index in range(0, total, chunk):
        yield pattern(min(chunk, total - index), seed=index)


def generated_digest(total: int, chunk: int = MIB) -> str:
    digest = hashlib.sha256()
    for index in range(0, total, chunk):
        digest.update(pattern(min(chunk, total - index), seed=index))
    return digest.hexdigest()


async def read_all(storage: S3Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in storage.open_stream(key, start=start, end=end)])


async def keys_in(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    return [item["Key"] for item in listing.get("Contents", [])]


async def pending_uploads(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    listing = await s3.list_multipart_uploads(Bucket=bucket, Prefix=f"{prefix}/")
    return [upload["Key"] for upload in listing.get("Uploads", [])]


async def wait_until_expired(uri: str) -> None:
    """Sleep past the expiry that a SigV4 query signature carries."""
    query = parse_qs(urlsplit(uri).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expiry = signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))
    # Servers compare whole seconds: one more second rules out a boundary race.
    delay = (expiry - datetime.now(UTC)).total_seconds() + 1.0
    await asyncio.sleep(max(0.0, delay))


async def get(uri: str, **headers: str) -> httpx.Response:
    """A plain GET, with no credentials of any kind."""
    async with httpx.AsyncClient() as http:
        return await http.get(uri, headers=headers)


class TestStart:
    async def test_creates_missing_bucket(self, s3_server: SeaweedS3, s3: S3Client) -> None:
        bucket = new_bucket()

        async with make_storage(s3_server, bucket) as backend:
            await backend.health_check()

        await s3.head_bucket(Bucket=bucket)

    async def test_existing_bucket_is_kept(
        self, s3_server: SeaweedS3, storage: S3Storage, s3: S3Client, prefix: str
    ) -> None:
        await storage.put_stream(f"{prefix}/kept", chunked(b"data"), size_limit=MIB)

        async with make_storage(s3_server, storage.bucket) as again:
            assert await again.size(f"{prefix}/kept") == 4

        assert await keys_in(s3, storage.bucket, prefix) == [f"{prefix}/kept"]

    async def test_without_create_a_missing_bucket_is_unhealthy(
        self, s3_server: SeaweedS3, s3: S3Client
    ) -> None:
        bucket = new_bucket()

        async with make_storage(s3_server, bucket, create_bucket=False) as backend:
            with pytest.raises(StorageUnavailable):
                await backend.health_check()

        buckets = await s3.list_buckets()
        assert bucket not in [b.get("Name") for b in buckets.get("Buckets", [])]

    async def test_unreachable_endpoint_fails_bucket_creation(self) -> None:
        backend = S3Storage(
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            bucket=new_bucket(),
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            create_bucket=True,
            max_attempts=1,
        )

        with pytest.raises(StorageUnavailable):
            await backend.start()
        await backend.close()

    async def test_wrong_credentials_fail_bucket_creation(self, s3_server: SeaweedS3) -> None:
        backend = make_storage(s3_server, new_bucket(), secret_access_key="wrong")

        with pytest.raises(StorageUnavailable):
            await backend.start()

    async def test_not_started(self, s3_server: SeaweedS3) -> None:
        backend = make_storage(s3_server, new_bucket())

        with pytest.raises(RuntimeError, match="not started"):
            await backend.size("key")

    def test_part_size_below_s3_minimum(self, s3_server: SeaweedS3) -> None:
        with pytest.raises(ValueError, match="part_size"):
            make_storage(s3_server, new_bucket(), part_size=MIB)

    def test_half_credentials(self, s3_server: SeaweedS3) -> None:
        with pytest.raises(ValueError, match="secret_access_key"):
            make_storage(s3_server, new_bucket(), secret_access_key=None)


class TestPutStream:
    async def test_multipart_round_trip(
        self, storage: S3Storage, s3: S3Client, prefix: str
    ) -> None:
        total = 20 * MIB + 12345
        key = f"{prefix}/artifact"

        size = await storage.put_stream(key, generated(total), size_limit=total)

        assert size == total
        digest = hashlib.sha256()
        async for chunk in storage.open_stream(key):
            digest.update(chunk)
        assert digest.hexdigest() == generated_digest(total)
        head = await s3.head_object(Bucket=storage.bucket, Key=key)
        assert head["ContentLength"] == total
        assert head["ContentType"] == ARTIFACT_CONTENT_TYPE
        # A multipart ETag ends in -<number of parts>: 20 MiB in 5 MiB parts makes five.
        assert head["ETag"].strip('"').endswith("-5")
        assert await pending_uploads(s3, storage.bucket, prefix) == []

    async def test_buffers_about_one_part(self, storage: S3Storage, prefix: str) -> None:
        block = pattern(MIB)

        async def same_block(count: int) -> AsyncIterator[bytes]:
            for _ in range(count):
                yield block

        tracemalloc.start()
        try:
            await storage.put_stream(f"{prefix}/big", same_block(40), size_limit=40 * MIB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        # The part being assembled plus the copy the HTTP layer makes while sending it.
        assert peak < 3 * PART
        assert await storage.size(f"{prefix}/big") == 40 * MIB

    async def test_small_object_is_one_put(
        self, storage: S3Storage, s3: S3Client, prefix: str
    ) -> None:
        data = pattern(100_000)
        key = f"{prefix}/small"

        size = await storage.put_stream(key, chunked(data, 4096), size_limit=MIB)

        assert size == len(data)
        assert await read_all(storage, key) == data
        head = await s3.head_object(Bucket=storage.bucket, Key=key)
        assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()
        assert head["ContentType"] == ARTIFACT_CONTENT_TYPE

    async def test_exactly_one_part(self, storage: S3Storage, prefix: str) -> None:
        data = pattern(PART)

        assert await storage.put_stream(f"{prefix}/one", chunked(data), size_limit=PART) == PART

        assert await read_all(storage, f"{prefix}/one") == data

    async def test_one_huge_chunk(self, storage: S3Storage, prefix: str) -> None:
        data = pattern(2 * PART + 10)

        await storage.put_stream(f"{prefix}/huge", chunked(data, len(data)), size_limit=len(data))

        assert await read_all(storage, f"{prefix}/huge") == data

    async def test_empty_object(self, storage: S3Storage, prefix: str) -> None:
        assert await storage.put_stream(f"{prefix}/empty", chunked(b""), size_limit=0) == 0

        assert await storage.size(f"{prefix}/empty") == 0
        assert await read_all(storage, f"{prefix}/empty") == b""

    async def test_replaces_existing(self, storage: S3Storage, prefix: str) -> None:
        await storage.put_stream(f"{prefix}/same", chunked(b"first version"), size_limit=MIB)

        await storage.put_stream(f"{prefix}/same", chunked(b"second"), size_limit=MIB)

        assert await read_all(storage, f"{prefix}/same") == b"second"

    async def test_too_large_after_parts_keeps_nothing(
        self, storage: S3Storage, s3: S3Client, prefix: str
    ) -> None:
        with pytest.raises(ObjectTooLarge):
            await storage.put_stream(f"{prefix}/big", generated(3 * PART), size_limit=2 * PART + 1)

        assert await keys_in(s3, storage.bucket, prefix) == []
        assert await pending_uploads(s3, storage.bucket, prefix) == []
        with pytest.raises(ObjectNotFound):
            await storage.size(f"{prefix}/big")

    async def test_too_large_small_object(
        self, storage: S3Storage, s3: S3Client, prefix: str
    ) -> None:
        with pytest.raises(ObjectTooLarge):
            await storage.put_stream(f"{prefix}/tiny", chunked(b"x" * 11, 3), size_limit=10)

        assert await keys_in(s3, storage.bucket, prefix) == []

    async def test_failing_chunks_keep_nothing(
        self, storage: S3Storage, s3: S3Client, prefix: str
    ) -> None:
        async def broken() -> AsyncIterator[bytes]:
            yield pattern(PART + 1)
            yield pattern(PART)
            raise ConnectionResetError("client went away")

        with pytest.raises(ConnectionResetError, match="client went away"):
            await storage.put_stream(f"{prefix}/broken", broken(), size_limit=10 * PART)

        assert await keys_in(s3, storage.bucket, prefix) == []
        assert await pending_uploads(s3, storage.bucket, prefix) == []

    async def test_failure_keeps_previous_object(self, storage: S3Storage, prefix: str) -> None:
        key = f"{prefix}/artifact"
        await storage.put_stream(key, chunked(b"good"), size_limit=10 * PART)

        async def broken() -> AsyncIterator[bytes]:
            yield pattern(PART)
            raise ValueError("bad artifact")

        with pytest.raises(ValueError, match="bad artifact"):
            await storage.put_stream(key, broken(), size_limit=10 * PART)

        assert await read_all(storage, key) == b"good"

    async def test_cancelled_upload_is_aborted(
        self, storage: S3Storage, s3: S3Client, prefix: str
    ) -> None:
        first_part_sent = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            yield pattern(PART)
            yield b"more"
            first_part_sent.set()
            await asyncio.Event().wait()
            yield b"never"

        key = f"{prefix}/stalled"
        task = asyncio.create_task(storage.put_stream(key, stalled(), size_limit=4 * PART))
        await asyncio.wait_for(first_part_sent.wait(), timeout=10)
        assert await pending_uploads(s3, storage.bucket, prefix) == [key]

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert await pending_uploads(s3, storage.bucket, prefix) == []
        assert await keys_in(s3, storage.bucket, prefix) == []

    @pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ""])
    async def test_invalid_key(self, storage: S3Storage, key: str) -> None:
        with pytest.raises(InvalidKey):
            await storage.put_stream(key, chunked(b"x"), size_limit=MIB)


class TestOpenStream:
    SIZE: Final = 300_000

    @pytest.fixture
    async def stored(self, storage: S3Storage, prefix: str) -> tuple[str, bytes]:
        data = pattern(self.SIZE)
        await storage.put_stream(f"{prefix}/ranged", chunked(data), size_limit=MIB)
        return f"{prefix}/ranged", data

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, None), (0, 1), (10, 20), (1000, None), (299_999, None), (0, 300_000), (5, 900_000)],
    )
    async def test_range(
        self, storage: S3Storage, stored: tuple[str, bytes], start: int, end: int | None
    ) -> None:
        key, data = stored

        assert await read_all(storage, key, start, end) == data[start:end]

    @pytest.mark.parametrize(("start", "end"), [(300_000, None), (400_000, None), (20, 20)])
    async def test_empty_range(
        self, storage: S3Storage, stored: tuple[str, bytes], start: int, end: int | None
    ) -> None:
        assert await read_all(storage, stored[0], start, end) == b""

    async def test_negative_offset(self, storage: S3Storage, stored: tuple[str, bytes]) -> None:
        with pytest.raises(ValueError, match="negative"):
            await read_all(storage, stored[0], -1)

    @pytest.mark.parametrize(("start", "end"), [(0, None), (10, 20), (5, 5)])
    async def test_missing(
        self, storage: S3Storage, prefix: str, start: int, end: int | None
    ) -> None:
        with pytest.raises(ObjectNotFound):
            await read_all(storage, f"{prefix}/missing", start, end)

    async def test_invalid_key(self, storage: S3Storage) -> None:
        with pytest.raises(InvalidKey):
            await read_all(storage, "../etc/passwd")

    async def test_partial_read_then_close(
        self, storage: S3Storage, stored: tuple[str, bytes]
    ) -> None:
        key, data = stored
        stream = storage.open_stream(key)
        assert isinstance(stream, AsyncGenerator)
        first = await anext(stream)
        await stream.aclose()

        assert data.startswith(first)
        assert await read_all(storage, key) == data


class TestSize:
    async def test_size(self, storage: S3Storage, prefix: str) -> None:
        await storage.put_stream(f"{prefix}/a/b", chunked(b"12345"), size_limit=MIB)

        assert await storage.size(f"{prefix}/a/b") == 5

    async def test_missing(self, storage: S3Storage, prefix: str) -> None:
        with pytest.raises(ObjectNotFound):
            await storage.size(f"{prefix}/missing")

    async def test_wrong_credentials(
        self, s3_server: SeaweedS3, storage: S3Storage, prefix: str
    ) -> None:
        await storage.put_stream(f"{prefix}/secret", chunked(b"12345"), size_limit=MIB)
        forged = make_storage(
            s3_server, storage.bucket, secret_access_key="wrong", create_bucket=False
        )

        async with forged:
            with pytest.raises(StorageUnavailable):
                await forged.size(f"{prefix}/secret")


class TestDelete:
    async def test_delete(self, storage: S3Storage, s3: S3Client, prefix: str) -> None:
        await storage.put_stream(f"{prefix}/doomed", chunked(b"bye"), size_limit=MIB)

        await storage.delete(f"{prefix}/doomed")

        with pytest.raises(ObjectNotFound):
            await storage.size(f"{prefix}/doomed")
        assert await keys_in(s3, storage.bucket, prefix) == []

    async def test_idempotent(self, storage: S3Storage, prefix: str) -> None:
        await storage.put_stream(f"{prefix}/twice", chunked(b"bye"), size_limit=MIB)

        await storage.delete(f"{prefix}/twice")
        await storage.delete(f"{prefix}/twice")
        await storage.delete(f"{prefix}/never-existed")

        with pytest.raises(ObjectNotFound):
            await storage.size(f"{prefix}/twice")

    async def test_keeps_other_objects(self, storage: S3Storage, s3: S3Client, prefix: str) -> None:
        await storage.put_stream(f"{prefix}/one", chunked(b"1"), size_limit=MIB)
        await storage.put_stream(f"{prefix}/two", chunked(b"2"), size_limit=MIB)

        await storage.delete(f"{prefix}/one")

        assert await keys_in(s3, storage.bucket, prefix) == [f"{prefix}/two"]

    async def test_invalid_key(self, storage: S3Storage) -> None:
        with pytest.raises(InvalidKey):
            await storage.delete("..")


class TestDownloadLink:
    @pytest.fixture
    async def stored(self, storage: S3Storage, prefix: str) -> tuple[str, bytes]:
        data = pattern(70_000)
        await storage.put_stream(f"{prefix}/artifact-id", chunked(data), size_limit=MIB)
        return f"{prefix}/artifact-id", data

    async def test_downloadable_without_credentials(
        self, s3_server: SeaweedS3, storage: S3Storage, stored: tuple[str, bytes]
    ) -> None:
        key, data = stored
        before = datetime.now(UTC).replace(microsecond=0)

        link = await storage.download_link(
            key,
            expire=timedelta(hours=24),
            filename="release-1.mender",
            external_url="http://ignored.example",
        )

        assert link.method == "GET"
        day = timedelta(hours=24)
        assert before + day <= link.expire <= before + day + timedelta(seconds=2)
        parts = urlsplit(link.uri)
        assert parts.scheme == "http"
        assert parts.netloc == f"{EXTERNAL_HOST}:{s3_server.port}"
        assert parts.path == f"/{storage.bucket}/{key}"
        query = parse_qs(parts.query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Expires"] == ["86400"]
        assert query["response-content-disposition"] == ['attachment; filename="release-1.mender"']
        response = await get(link.uri)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-disposition"] == 'attachment; filename="release-1.mender"'
        assert response.headers["content-type"] == ARTIFACT_CONTENT_TYPE

    async def test_range(self, storage: S3Storage, stored: tuple[str, bytes]) -> None:
        key, data = stored
        link = await storage.download_link(
            key, expire=timedelta(minutes=15), filename="a.mender", external_url=""
        )

        response = await get(link.uri, Range="bytes=100-199")

        assert response.status_code == 206
        assert response.content == data[100:200]
        assert response.headers["content-range"] == f"bytes 100-199/{len(data)}"
        assert response.headers["content-disposition"] == 'attachment; filename="a.mender"'

    async def test_expired(self, storage: S3Storage, stored: tuple[str, bytes]) -> None:
        key, data = stored
        link = await storage.download_link(
            key, expire=timedelta(seconds=1), filename="a.mender", external_url=""
        )
        await wait_until_expired(link.uri)

        response = await get(link.uri)

        assert response.status_code == 403
        assert data not in response.content

    async def test_signed_for_external_host_only(
        self, s3_server: SeaweedS3, storage: S3Storage, stored: tuple[str, bytes]
    ) -> None:
        link = await storage.download_link(
            stored[0], expire=timedelta(minutes=5), filename="a.mender", external_url=""
        )
        internal = urlsplit(link.uri)._replace(netloc=f"127.0.0.1:{s3_server.port}")

        response = await get(urlunsplit(internal))

        assert response.status_code == 403
        assert "<Code>SignatureDoesNotMatch</Code>" in response.text
        assert stored[1] not in response.content

    async def test_forged_key(
        self, storage: S3Storage, stored: tuple[str, bytes], prefix: str
    ) -> None:
        secret = b"another tenant's artifact"
        await storage.put_stream(f"{prefix}-other/secret", chunked(secret), size_limit=MIB)
        link = await storage.download_link(
            stored[0], expire=timedelta(minutes=5), filename="a.mender", external_url=""
        )

        response = await get(link.uri.replace(stored[0], f"{prefix}-other/secret"))

        assert response.status_code == 403
        assert secret not in response.content

    async def test_forged_filename(self, storage: S3Storage, stored: tuple[str, bytes]) -> None:
        link = await storage.download_link(
            stored[0], expire=timedelta(minutes=5), filename="a.mender", external_url=""
        )

        response = await get(link.uri.replace("a.mender", "b.exe"))

        assert response.status_code == 403
        assert "<Code>SignatureDoesNotMatch</Code>" in response.text
        assert stored[1] not in response.content

    async def test_hostile_filename(self, storage: S3Storage, stored: tuple[str, bytes]) -> None:
        link = await storage.download_link(
            stored[0],
            expire=timedelta(minutes=5),
            filename='evil"\r\nSet-Cookie: a=b.mender',
            external_url="",
        )

        response = await get(link.uri)

        assert response.status_code == 200
        assert "set-cookie" not in response.headers
        assert (
            response.headers["content-disposition"]
            == 'attachment; filename="evil\\"Set-Cookie: a=b.mender"'
        )

    async def test_non_ascii_filename(self, storage: S3Storage, stored: tuple[str, bytes]) -> None:
        link = await storage.download_link(
            stored[0], expire=timedelta(minutes=5), filename="año.mender", external_url=""
        )

        response = await get(link.uri)

        assert response.status_code == 200
        assert response.headers["content-disposition"] == (
            "attachment; filename=\"a?o.mender\"; filename*=UTF-8''a%C3%B1o.mender"
        )

    async def test_missing(self, storage: S3Storage, prefix: str) -> None:
        with pytest.raises(ObjectNotFound):
            await storage.download_link(
                f"{prefix}/missing", expire=timedelta(minutes=5), filename="a", external_url=""
            )

    async def test_invalid_key(self, storage: S3Storage) -> None:
        with pytest.raises(InvalidKey):
            await storage.download_link(
                "tenant/../x", expire=timedelta(minutes=5), filename="a", external_url=""
            )

    async def test_expiry_capped_at_seven_days(
        self, storage: S3Storage, stored: tuple[str, bytes]
    ) -> None:
        link = await storage.download_link(
            stored[0], expire=timedelta(days=30), filename="a", external_url=""
        )

        assert parse_qs(urlsplit(link.uri).query)["X-Amz-Expires"] == ["604800"]
        assert link.expire <= datetime.now(UTC) + timedelta(days=7)
        assert (await get(link.uri)).status_code == 200


class TestUploadLink:
    async def test_upload(self, s3_server: SeaweedS3, storage: S3Storage, prefix: str) -> None:
        data = pattern(50_000)
        key = f"{prefix}/uploaded"
        before = datetime.now(UTC).replace(microsecond=0)

        link = await storage.upload_link(
            key, expire=timedelta(hours=1), external_url="http://ignored.example"
        )

        assert link.method == "PUT"
        hour = timedelta(hours=1)
        assert before + hour <= link.expire <= before + hour + timedelta(seconds=2)
        assert urlsplit(link.uri).netloc == f"{EXTERNAL_HOST}:{s3_server.port}"
        async with httpx.AsyncClient() as http:
            response = await http.put(link.uri, content=data)
        assert response.status_code == 200
        assert await storage.size(key) == len(data)
        assert await read_all(storage, key) == data

    async def test_not_usable_for_download(self, storage: S3Storage, prefix: str) -> None:
        key = f"{prefix}/uploaded"
        await storage.put_stream(key, chunked(b"private"), size_limit=MIB)
        link = await storage.upload_link(key, expire=timedelta(hours=1), external_url="")

        response = await get(link.uri)

        assert response.status_code == 403
        assert b"private" not in response.content

    async def test_expired(self, storage: S3Storage, s3: S3Client, prefix: str) -> None:
        link = await storage.upload_link(
            f"{prefix}/late", expire=timedelta(seconds=1), external_url=""
        )
        await wait_until_expired(link.uri)

        async with httpx.AsyncClient() as http:
            response = await http.put(link.uri, content=b"late")

        assert response.status_code == 403
        assert await keys_in(s3, storage.bucket, prefix) == []

    async def test_invalid_key(self, storage: S3Storage) -> None:
        with pytest.raises(InvalidKey):
            await storage.upload_link("/abs", expire=timedelta(hours=1), external_url="")


class TestHealthCheck:
    async def test_healthy(self, storage: S3Storage) -> None:
        await storage.health_check()

    async def test_wrong_endpoint(self) -> None:
        backend = S3Storage(
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            bucket=new_bucket(),
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            max_attempts=1,
        )

        async with backend:
            with pytest.raises(StorageUnavailable):
                await backend.health_check()

    async def test_wrong_credentials(self, s3_server: SeaweedS3, storage: S3Storage) -> None:
        forged = make_storage(
            s3_server, storage.bucket, access_key_id="nobody", create_bucket=False
        )

        async with forged:
            with pytest.raises(StorageUnavailable):
                await forged.health_check()
