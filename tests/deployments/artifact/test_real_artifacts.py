"""The streaming reader against artifacts written by the real mender-artifact tool."""

from __future__ import annotations

import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.deployments.artifact import ArtifactError, ArtifactMeta, ArtifactParser
from tests.deployments.artifact.builders import (
    FILE_DATE,
    Tool,
    members,
    offsets,
    parse,
    parse_error,
    sha256,
    tar_bytes,
)

CHUNK_SIZES = [1, 7, 4096, 65536, None]


def hello_file_matches(meta: ArtifactMeta, tool: Tool) -> None:
    [update] = meta.updates
    [file] = update.files
    assert file.name == "hello.txt"
    assert file.size == len(tool.files["hello.txt"])
    assert file.checksum == sha256(tool.files["hello.txt"])
    assert file.date == FILE_DATE


class TestModuleImage:
    @pytest.mark.parametrize("chunk", CHUNK_SIZES)
    @pytest.mark.parametrize("compression", ["gzip", "lzma", "none"])
    def test_single_file(
        self, tool: Tool, single_file: dict[str, bytes], compression: str, chunk: int | None
    ) -> None:
        meta = parse(single_file[compression], chunk)

        assert meta.format == "mender"
        assert meta.version == 3
        assert meta.name == "release-1"
        assert meta.device_types_compatible == ["raspberrypi4"]
        assert meta.signed is False
        assert meta.provides == {
            "artifact_name": "release-1",
            "rootfs-image.single-file.version": "release-1",
        }
        assert meta.depends == {"device_type": ["raspberrypi4"]}
        assert meta.clears_provides == ["rootfs-image.single-file.*"]
        assert meta.updates[0].type == "single-file"
        assert meta.updates[0].meta_data == []
        hello_file_matches(meta, tool)

    @pytest.mark.parametrize("chunk", [4096, 65536, None])
    def test_multiple_files(self, tool: Tool, chunk: int | None) -> None:
        artifact = tool.write(
            "module-image",
            "-T",
            "directory",
            "-n",
            "multi",
            "-t",
            "dev-a",
            "-t",
            "dev-b",
            "-f",
            "hello.txt",
            "-f",
            "noise.bin",
            "-f",
            "zeros.img",
        )

        meta = parse(artifact, chunk)

        assert meta.device_types_compatible == ["dev-a", "dev-b"]
        assert meta.depends == {"device_type": ["dev-a", "dev-b"]}
        [update] = meta.updates
        expected = [(name, tool.files[name]) for name in ("hello.txt", "noise.bin", "zeros.img")]
        assert [(f.name, f.size, f.checksum, f.date) for f in update.files] == [
            (name, len(content), sha256(content), FILE_DATE) for name, content in expected
        ]
        # The same files as mender-artifact itself reports.
        listing = tool.read(artifact)
        assert re.findall(r"name:\s+(\S+)", listing) == [f.name for f in update.files]
        assert re.findall(r"checksum:\s+([0-9a-f]{64})", listing) == [
            f.checksum for f in update.files
        ]
        assert [int(size) for size in re.findall(r"size:\s+(\d+)", listing)] == [
            f.size for f in update.files
        ]

    def test_provides_depends_clears_provides(self, tool: Tool) -> None:
        artifact = tool.write(
            "module-image",
            "-T",
            "app",
            "-n",
            "app-2.0",
            "-t",
            "beaglebone",
            "-f",
            "hello.txt",
            "-p",
            "app.version:2.0",
            "-p",
            "app.channel:stable",
            "-d",
            "app.version:1.0",
            "-d",
            "os:debian",
            "--clears-provides",
            "app.legacy.*",
            "-g",
            "production",
            "-G",
            "staging",
            "-N",
            "app-1.0",
            "--software-version",
            "2.0.0",
        )

        meta = parse(artifact, 4096)

        assert meta.provides == {
            "artifact_name": "app-2.0",
            "artifact_group": "production",
            "app.version": "2.0",
            "app.channel": "stable",
            "rootfs-image.app.version": "2.0.0",
        }
        assert meta.depends == {
            "artifact_name": ["app-1.0"],
            "device_type": ["beaglebone"],
            "artifact_group": ["staging"],
            "app.version": "1.0",
            "os": "debian",
        }
        assert meta.clears_provides == ["app.legacy.*", "rootfs-image.app.*"]
        listing = tool.read(artifact)
        for key, value in meta.provides.items():
            if key not in ("artifact_name", "artifact_group"):
                assert f"{key}: {value}" in listing

    def test_meta_data(self, tool: Tool) -> None:
        artifact = tool.write(
            "module-image",
            "-T",
            "app",
            "-n",
            "with-meta",
            "-t",
            "dev",
            "-f",
            "hello.txt",
            "-m",
            "meta.json",
        )

        meta = parse(artifact, 7)

        assert meta.updates[0].meta_data == [json.loads(tool.files["meta.json"])]

    def test_no_files(self, tool: Tool) -> None:
        artifact = tool.write("module-image", "-T", "reboot", "-n", "empty", "-t", "dev")

        meta = parse(artifact, 1)

        assert meta.updates[0].type == "reboot"
        assert meta.updates[0].files == []

    def test_long_file_name(self, tool: Tool) -> None:
        # Longer than the 100 bytes of a ustar name: mender-artifact writes a pax header.
        name = "l" * 150 + ".bin"
        (tool.workdir / name).write_bytes(b"long name\n")
        os.utime(tool.workdir / name, (FILE_DATE.timestamp(), FILE_DATE.timestamp()))
        artifact = tool.write("module-image", "-T", "t", "-n", "long", "-t", "d", "-f", name)

        meta = parse(artifact, 7)

        [file] = meta.updates[0].files
        assert (file.name, file.size, file.date) == (name, 10, FILE_DATE)

    def test_augmented(self, tool: Tool) -> None:
        artifact = tool.write(
            "module-image",
            "-T",
            "app",
            "-n",
            "augmented",
            "-t",
            "dev",
            "-f",
            "hello.txt",
            "-m",
            "meta.json",
            "-p",
            "app.version:1",
            "--augment-type",
            "app",
            "--augment-provides",
            "app.flavour:blue",
            "--augment-depends",
            "hw.rev:3",
            "--augment-meta-data",
            "augment-meta.json",
            "--augment-file",
            "noise.bin",
            "-k",
            "key.pem",
        )

        meta = parse(artifact, 4096)

        assert meta.signed is True
        assert meta.provides == {
            "artifact_name": "augmented",
            "app.version": "1",
            "app.flavour": "blue",
            "rootfs-image.app.version": "augmented",
        }
        assert meta.depends == {"device_type": ["dev"], "hw.rev": "3"}
        assert meta.updates[0].meta_data == [
            {"board": "rpi4", "nested": {"n": 1, "m": 2}, "list": [1, 2], "extra": True}
        ]
        # NOTE: Mender lists only the original files of an augmented payload.
        assert [f.name for f in meta.updates[0].files] == ["hello.txt"]

        without_augment_header = tar_bytes(
            [(name, content) for name, content in members(artifact) if "augment.tar" not in name]
        )
        assert parse_error(without_augment_header) == (
            "expected header-augment after the header, found data/0000.tar.gz"
        )

    def test_bootstrap_artifact(self, tool: Tool) -> None:
        artifact = tool.write("bootstrap-artifact", "-n", "bootstrap", "-t", "dev")

        meta = parse(artifact, 7)

        assert meta.name == "bootstrap"
        assert meta.provides == {"artifact_name": "bootstrap"}
        assert [(u.type, u.files, u.meta_data) for u in meta.updates] == [(None, [], [])]


class TestRootfsImage:
    @pytest.mark.parametrize("chunk", [7, 65536])
    @pytest.mark.parametrize("compression", ["gzip", "lzma"])
    def test_version_3(self, tool: Tool, compression: str, chunk: int) -> None:
        artifact = tool.write(
            "rootfs-image",
            "-n",
            "os-1.2",
            "-t",
            "qemux86-64",
            "-f",
            "rootfs.ext4",
            "--no-progress",
            "--compression",
            compression,
        )

        meta = parse(artifact, chunk)

        checksum = sha256(tool.files["rootfs.ext4"])
        assert meta.version == 3
        assert meta.updates[0].type == "rootfs-image"
        assert meta.provides == {
            "artifact_name": "os-1.2",
            "rootfs-image.checksum": checksum,
            "rootfs-image.version": "os-1.2",
        }
        assert meta.clears_provides == ["artifact_group", "rootfs_image_checksum", "rootfs-image.*"]
        [file] = meta.updates[0].files
        assert (file.name, file.size, file.checksum) == ("rootfs.ext4", 20_000, checksum)

    @pytest.mark.parametrize("chunk", [1, None])
    def test_version_2(self, tool: Tool, chunk: int | None) -> None:
        artifact = tool.write(
            "rootfs-image",
            "-v",
            "2",
            "-n",
            "legacy",
            "-t",
            "dev-a",
            "-t",
            "dev-b",
            "-f",
            "rootfs.ext4",
            "--no-progress",
        )

        meta = parse(artifact, chunk)

        assert meta.version == 2
        assert meta.name == "legacy"
        assert meta.device_types_compatible == ["dev-a", "dev-b"]
        assert meta.provides == {}
        assert meta.depends == {"device_type": ["dev-a", "dev-b"]}
        assert meta.clears_provides == []
        [update] = meta.updates
        assert update.type == "rootfs-image"
        assert update.meta_data == []
        [file] = update.files
        assert (file.name, file.checksum, file.date) == (
            "rootfs.ext4",
            sha256(tool.files["rootfs.ext4"]),
            FILE_DATE,
        )

    @pytest.mark.parametrize("version", ["2", "3"])
    def test_signed(self, tool: Tool, version: str) -> None:
        artifact = tool.write(
            "rootfs-image",
            "-v",
            version,
            "-n",
            "signed",
            "-t",
            "dev",
            "-f",
            "rootfs.ext4",
            "--no-progress",
            "-k",
            "key.pem",
        )
        assert b"manifest.sig" in artifact[:4096]

        meta = parse(artifact, 4096)

        assert meta.signed is True
        assert meta.version == int(version)


class TestCorruptArtifacts:
    def test_truncated_anywhere(self, single_file: dict[str, bytes]) -> None:
        for compression in ("gzip", "none"):
            artifact = single_file[compression]
            cuts = set(range(0, len(artifact), 97)) | {len(artifact) - 1, len(artifact) - 512}
            for start in offsets(artifact).values():
                cuts |= {start - 512, start - 1, start, start + 1}
            for cut in sorted(cuts):
                message = parse_error(artifact[:cut])
                assert message.startswith("truncated artifact") or message in (
                    "empty artifact",
                    "artifact is not a tar archive",
                ), (cut, message)

    def test_truncated_in_payload(self, single_file: dict[str, bytes]) -> None:
        artifact = single_file["gzip"]
        cut = offsets(artifact)["data/0000.tar.gz"] + 10

        message = parse_error(artifact[:cut], 7)

        assert message == "truncated artifact (it ends inside data/0000.tar.gz)"

    def test_flipped_payload_byte(self, tool: Tool, single_file: dict[str, bytes]) -> None:
        artifact = bytearray(single_file["none"])
        content_at = artifact.index(tool.files["hello.txt"])
        artifact[content_at] ^= 0x01

        assert parse_error(bytes(artifact), 4096) == "invalid checksum for data/0000/hello.txt"

    def test_flipped_compressed_payload_byte(self, single_file: dict[str, bytes]) -> None:
        artifact = bytearray(single_file["gzip"])
        artifact[offsets(bytes(artifact))["data/0000.tar.gz"] + 20] ^= 0x10

        message = parse_error(bytes(artifact))

        assert message.startswith("data/0000.tar.gz: corrupt gzip data") or (
            message == "invalid checksum for data/0000/hello.txt"
        )

    def test_flipped_header_byte(self, single_file: dict[str, bytes]) -> None:
        artifact = bytearray(single_file["gzip"])
        artifact[offsets(bytes(artifact))["header.tar.gz"] + 30] ^= 0x01

        assert parse_error(bytes(artifact)) == "invalid checksum for header.tar.gz"

    def test_header_too_large(self, tool: Tool) -> None:
        artifact = tool.write(
            "module-image", "-T", "t", "-n", "n", "-t", "d", "-m", "big-meta.json"
        )

        assert parse(artifact).updates[0].meta_data[0]["blob"] == "x" * 300_000
        # Compressed, the header is tiny: only its decompressed size can give it away.
        assert parse_error(artifact, max_header_size=100_000) == (
            "header.tar.gz is too large (over 100000 bytes uncompressed)"
        )
        assert parse_error(artifact, max_header_size=100) == (
            f"header.tar.gz is too large "
            f"({len(dict(members(artifact))['header.tar.gz'])} bytes, at most 100)"
        )

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test_fuzzed(self, single_file: dict[str, bytes], data: st.DataObject) -> None:
        artifact = bytearray(data.draw(st.sampled_from(sorted(single_file.items())))[1])
        flips = data.draw(
            st.lists(st.tuples(st.integers(0, len(artifact) - 1), st.integers(1, 255)), max_size=4)
        )
        for position, mask in flips:
            artifact[position] ^= mask
        cut = data.draw(st.one_of(st.none(), st.integers(0, len(artifact))))
        chunk = data.draw(st.sampled_from([None, 7, 1000, 4096]))
        outcome: ArtifactMeta | ArtifactError
        try:
            outcome = parse(bytes(artifact[:cut]), chunk)
        except ArtifactError as exc:
            outcome = exc
        if isinstance(outcome, ArtifactError):
            assert outcome.message
        else:
            # Flips may land where nothing is checked (padding), but nothing may be missing.
            assert cut in (None, len(artifact))


class TestChunking:
    @settings(max_examples=60, deadline=None, database=None)
    @given(data=st.data())
    def test_any_chunking(self, single_file: dict[str, bytes], data: st.DataObject) -> None:
        artifact = data.draw(st.sampled_from(sorted(single_file.items())))[1]
        cuts = sorted(data.draw(st.sets(st.integers(1, len(artifact) - 1), max_size=40)))
        parser = ArtifactParser()
        for start, end in zip([0, *cuts], [*cuts, len(artifact)], strict=True):
            parser.feed(artifact[start:end])

        assert parser.finish() == parse(artifact)
