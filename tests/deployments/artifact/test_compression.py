"""The decoders of compressed inner tars, through the whole reader."""

from __future__ import annotations

import lzma
import tarfile

from tests.deployments.artifact.builders import parse_error, synthetic, tar_bytes


class TestInArtifact:
    def test_xz_dictionary_over_the_memory_limit(self) -> None:
        inner = tar_bytes([("a.txt", b"a")], tarfile.USTAR_FORMAT, 1e9)
        big_dictionary = [{"id": lzma.FILTER_LZMA2, "dict_size": 128 * 1024 * 1024}]
        payload = lzma.compress(inner, format=lzma.FORMAT_XZ, filters=big_dictionary)
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
