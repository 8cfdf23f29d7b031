"""The local-filesystem storage backend and the link signer."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from common.core.errors import BadRequest, Forbidden
from services.deployments.storage import (
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    object_key,
    validate_key,
)
from services.deployments.storage.local import OBJECTS_PATH, LocalStorage
from services.deployments.storage.signing import URLSigner


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    """A local store under a temporary directory."""
    return LocalStorage(tmp_path / "objects", URLSigner("secret"), chunk_size=4)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


class TestKeys:
    @pytest.mark.parametrize(
        "key", ["", "/abs", "a//b", "..", "a/../b", ".hidden", "a/.x", "a b", "a\\b", "x" * 200]
    )
    def test_invalid(self, key: str) -> None:
        with pytest.raises(InvalidKey):
            validate_key(key)

    def test_object_key(self) -> None:
        assert object_key("", "abc") == "abc"
        assert object_key("tenant", "abc") == "tenant/abc"
        odd = object_key("../etc", "passwd")
        assert odd.startswith("t-")
        assert odd.endswith("/passwd")
        assert odd != object_key("../etd", "passwd")
        with pytest.raises(InvalidKey):
            object_key("tenant", "../passwd")


class TestLocalStorage:
    async def test_round_trip(self, storage: LocalStorage) -> None:
        size = await storage.put_stream("t/a", _chunks(b"hello ", b"world"), size_limit=100)
        assert size == 11
        assert await storage.size("t/a") == 11
        assert b"".join([c async for c in storage.open_stream("t/a")]) == b"hello world"
        assert b"".join([c async for c in storage.open_stream("t/a", start=3, end=8)]) == b"lo wo"
        assert b"".join([c async for c in storage.open_stream("t/a", start=6)]) == b"world"
        await storage.delete("t/a")
        await storage.delete("t/a")
        with pytest.raises(ObjectNotFound):
            await storage.size("t/a")

    async def test_too_large_keeps_nothing(self, storage: LocalStorage) -> None:
        with pytest.raises(ObjectTooLarge):
            await storage.put_stream("big", _chunks(b"12345", b"67890"), size_limit=7)
        assert _files(storage.root) == []

    async def test_failing_stream_keeps_nothing_and_old_object(self, storage: LocalStorage) -> None:
        await storage.put_stream("k", _chunks(b"original"), size_limit=100)

        async def broken() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("client went away")

        with pytest.raises(RuntimeError):
            await storage.put_stream("k", broken(), size_limit=100)
        assert _files(storage.root) == [storage.root / "k"]
        assert (storage.root / "k").read_bytes() == b"original"

    async def test_missing(self, storage: LocalStorage) -> None:
        with pytest.raises(ObjectNotFound):
            await storage.size("nope")
        with pytest.raises(ObjectNotFound):
            async for _ in storage.open_stream("nope"):
                pass
        with pytest.raises(ObjectNotFound):
            await storage.download_link(
                "nope", expire=timedelta(minutes=1), filename="x", external_url="http://h"
            )

    async def test_symlink_escape_refused(self, storage: LocalStorage, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_text("s")
        storage.root.mkdir(parents=True, exist_ok=True)
        (storage.root / "link").symlink_to(outside)
        with pytest.raises(InvalidKey):
            await storage.size("link/secret")

    async def test_links(self, storage: LocalStorage) -> None:
        await storage.put_stream("t/obj", _chunks(b"x"), size_limit=10)
        link = await storage.download_link(
            "t/obj", expire=timedelta(hours=24), filename="a.mender", external_url="https://h/"
        )
        parts = urlsplit(link.uri)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"https://h{OBJECTS_PATH}t/obj"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert query["filename"] == "a.mender"
        assert link.method == "GET"
        assert timedelta(hours=23) < link.expire - datetime.now(UTC) <= timedelta(hours=24)
        URLSigner("secret").verify(
            method="GET", path=parts.path, query=query, extra_names=("filename",)
        )
        upload = await storage.upload_link(
            "t/new", expire=timedelta(hours=1), external_url="http://h"
        )
        assert upload.method == "PUT"

    async def test_health(self, storage: LocalStorage) -> None:
        await storage.health_check()
        assert storage.root.is_dir()


class TestSigner:
    def _query(self, uri: str) -> tuple[str, dict[str, str]]:
        parts = urlsplit(uri)
        return unquote(parts.path), {k: v[0] for k, v in parse_qs(parts.query).items()}

    def test_menders_canonical_string(self) -> None:
        # The configuration link of Mender: HMAC over METHOD, path, expire and tenant.
        signer = URLSigner("s3cret")
        when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        uri = signer.sign(
            base_url="https://h", method="GET", path="/p/a b", expire=when, tenant_id="t1"
        )
        path, query = self._query(uri)
        assert path == "/p/a b"
        assert query["x-men-expire"] == "2030-01-02T03:04:05Z"
        assert query["tenant_id"] == "t1"
        canonical = b"GET\n/p/a b\nx-men-expire=2030-01-02T03:04:05Z\ntenant_id=t1\n"
        expected = base64.urlsafe_b64encode(
            hmac.new(b"s3cret", canonical, hashlib.sha256).digest()
        ).rstrip(b"=")
        assert query["x-men-signature"] == expected.decode()
        signer.verify(method="GET", path=path, query=query)

    def test_refusals(self) -> None:
        signer = URLSigner("k")
        future = datetime.now(UTC) + timedelta(minutes=5)
        path, query = self._query(
            signer.sign(base_url="http://h", method="GET", path="/x", expire=future)
        )
        with pytest.raises(Forbidden):
            signer.verify(method="PUT", path=path, query=query)
        with pytest.raises(Forbidden):
            signer.verify(method="GET", path="/y", query=query)
        with pytest.raises(Forbidden):
            URLSigner("other").verify(method="GET", path=path, query=query)
        with pytest.raises(Forbidden):
            signer.verify(method="GET", path=path, query={**query, "tenant_id": "evil"})
        with pytest.raises(BadRequest):
            signer.verify(method="GET", path=path, query={"x-men-expire": query["x-men-expire"]})
        with pytest.raises(BadRequest):
            signer.verify(method="GET", path=path, query={**query, "x-men-expire": "soon"})
        with pytest.raises(Forbidden):
            signer.verify(method="GET", path=path, query=query, now=future + timedelta(seconds=1))
        with pytest.raises(ValueError, match="reserved"):
            signer.sign(
                base_url="h", method="GET", path="/x", expire=future, extra={"tenant_id": "x"}
            )
