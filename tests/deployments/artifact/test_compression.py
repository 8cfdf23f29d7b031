"""The decoders of compressed inner tars: none, gzip and xz; zstd refused."""

from __future__ import annotations

import gzip
import lzma
import random
import tarfile

import pytest

from services.deployments.artifact import ArtifactError
from services.deployments.artifact.compression import decoder_for
from tests.deployments.artifact.builders import parse_error, synthetic, tar_bytes

LABEL = "inner.tar"
STEP = 64 * 1024  # the most output a decoder hands on at once
CONTENT = random.Random(3).randbytes(20_000) + bytes(200_000)


def decode(suffix: str, data: bytes, chunk: int | None = None) -> list[bytes]:
    """Push `data` through the decoder for `suffix` in pieces; the pieces it hands on."""
    pieces: list[bytes] = []
    decoder = decoder_for(suffix, lambda piece: pieces.append(bytes(piece)), LABEL)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        decoder.feed(memoryview(data)[start : start + step])
    decoder.close()
    return pieces


def decode_error(suffix: str, data: bytes) -> str:
    """The message the decoder for `suffix` refuses `data` with."""
    with pytest.raises(ArtifactError) as info:
        decode(suffix, data)
    return info.value.message


def xz(data: bytes, dict_size: int = 1024 * 1024) -> bytes:
    """`data` as one xz stream with an LZMA2 dictionary of `dict_size` bytes."""
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": dict_size}]
    return lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters)


class TestPlain:
    def test_passes_through(self) -> None:
        assert decode("", b"abc", 1) == [b"a", b"b", b"c"]


class TestGzip:
    @pytest.mark.parametrize("chunk", [1, 1000, None])
    def test_decoded(self, chunk: int | None) -> None:
        assert b"".join(decode(".gz", gzip.compress(CONTENT), chunk)) == CONTENT

    def test_concatenated_members(self) -> None:
        data = gzip.compress(b"first ") + gzip.compress(b"") + gzip.compress(b"second")

        assert b"".join(decode(".gz", data, 5)) == b"first second"

    def test_output_in_bounded_pieces(self) -> None:
        # 2 MiB of zeros compress to a few KiB: the output must come out in steps.
        pieces = decode(".gz", gzip.compress(bytes(2 * 1024 * 1024)))

        assert max(len(piece) for piece in pieces) <= STEP
        assert sum(len(piece) for piece in pieces) == 2 * 1024 * 1024

    def test_truncated(self) -> None:
        message = decode_error(".gz", gzip.compress(CONTENT)[:-5])

        assert message == "inner.tar: truncated gzip data"

    @pytest.mark.parametrize(
        "data",
        [b"not gzip at all", gzip.compress(b"member") + b"trailing garbage"],
        ids=["garbage", "garbage-after-member"],
    )
    def test_corrupt(self, data: bytes) -> None:
        assert decode_error(".gz", data).startswith("inner.tar: corrupt gzip data (")

    def test_empty(self) -> None:
        assert decode_error(".gz", b"") == "inner.tar is empty"


class TestXz:
    @pytest.mark.parametrize("chunk", [1, 1000, None])
    def test_decoded(self, chunk: int | None) -> None:
        assert b"".join(decode(".xz", xz(CONTENT), chunk)) == CONTENT

    def test_concatenated_streams_with_padding(self) -> None:
        data = xz(b"first ") + bytes(8) + xz(b"second") + bytes(4)

        assert b"".join(decode(".xz", data, 3)) == b"first second"

    def test_output_in_bounded_pieces(self) -> None:
        pieces = decode(".xz", xz(bytes(2 * 1024 * 1024)))

        assert max(len(piece) for piece in pieces) <= STEP
        assert sum(len(piece) for piece in pieces) == 2 * 1024 * 1024

    def test_dictionary_over_the_memory_cap(self) -> None:
        # A few bytes of xz can ask for a 128 MiB dictionary; the decoder may use 96 MiB.
        message = decode_error(".xz", xz(b"tiny", dict_size=128 * 1024 * 1024))

        assert message == "inner.tar: xz data needs more than 96 MiB to decompress"

    def test_dictionary_under_the_memory_cap(self) -> None:
        # What `mender-artifact --compression lzma` writes: a 64 MiB dictionary.
        data = xz(b"fits", dict_size=64 * 1024 * 1024)

        assert decode(".xz", data) == [b"fits"]

    def test_truncated(self) -> None:
        message = decode_error(".xz", xz(CONTENT)[:-5])

        assert message == "inner.tar: truncated xz data"

    def test_corrupt(self) -> None:
        assert decode_error(".xz", b"not xz at all").startswith("inner.tar: corrupt xz data (")

    def test_empty(self) -> None:
        assert decode_error(".xz", b"") == "inner.tar is empty"


class TestOtherSuffixes:
    def test_zstd_refused(self) -> None:
        message = decode_error(".zst", b"\x28\xb5\x2f\xfd")

        assert message == "inner.tar: zstd compression is not supported by this server"

    def test_unknown_suffix(self) -> None:
        with pytest.raises(ValueError, match=r"unknown compression suffix '\.bz2'"):
            decode(".bz2", b"BZh")


class TestInArtifact:
    def test_xz_dictionary_over_the_memory_limit(self) -> None:
        inner = tar_bytes([("a.txt", b"a")], tarfile.USTAR_FORMAT, 1e9)
        payload = xz(inner, dict_size=128 * 1024 * 1024)
        artifact = synthetic(
            {"a.txt": b"a"},
            edit=lambda entries: [*entries[:3], ("data/0000.tar.xz", payload)],
        )

        message = parse_error(artifact)

        assert message == "data/0000.tar.xz: xz data needs more than 96 MiB to decompress"

    def test_zstd_unavailable(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"},
            edit=lambda entries: [*entries[:3], ("data/0000.tar.zst", b"\x28\xb5\x2f\xfd")],
        )

        message = parse_error(artifact)

        assert message == "data/0000.tar.zst: zstd compression is not supported by this server"
