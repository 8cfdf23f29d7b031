"""The streaming artifact parser, against artifacts written by the real mender-artifact tool.

Synthetic artifacts (built here with `tarfile`) cover what the tool never writes: other tar
flavours, lying manifests and malformed structure.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.deployments.app.parser import ArtifactError, ArtifactMeta, ArtifactParser

MENDER_ARTIFACT = shutil.which("mender-artifact")
FILE_DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
CHUNK_SIZES = [1, 7, 4096, 65536, None]


def parse(data: bytes, chunk: int | None = None, **kwargs: int) -> ArtifactMeta:
    """Feed `data` in pieces of `chunk` bytes (all at once when None) and finish."""
    parser = ArtifactParser(**kwargs)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        parser.feed(data[start : start + step])
    return parser.finish()


def parse_error(data: bytes, chunk: int | None = None, **kwargs: int) -> str:
    with pytest.raises(ArtifactError) as info:
        parse(data, chunk, **kwargs)
    return str(info.value)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- artifacts from mender-artifact ---------------------------------------------------------


@dataclass
class Tool:
    """Writes artifacts with mender-artifact into one directory."""

    workdir: Path
    files: dict[str, bytes]

    def path(self, name: str) -> str:
        return str(self.workdir / name)

    def write(self, *args: str) -> bytes:
        assert MENDER_ARTIFACT is not None
        out = self.workdir / f"out-{len(list(self.workdir.glob('out-*')))}.mender"
        subprocess.run(
            [MENDER_ARTIFACT, "write", *args, "-o", str(out)],
            check=True,
            capture_output=True,
            cwd=self.workdir,
        )
        return out.read_bytes()

    def read(self, artifact: bytes) -> str:
        assert MENDER_ARTIFACT is not None
        source = self.workdir / "to-read.mender"
        source.write_bytes(artifact)
        done = subprocess.run(
            [MENDER_ARTIFACT, "read", str(source)], check=True, capture_output=True, text=True
        )
        return done.stdout


@pytest.fixture(scope="session")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Tool:
    assert MENDER_ARTIFACT, "mender-artifact is not installed (make e2e-deps installs it)"
    workdir = tmp_path_factory.mktemp("artifacts")
    rng = random.Random(7)
    files = {
        "hello.txt": b"hello, fleet\n",
        "noise.bin": rng.randbytes(150_000),
        "zeros.img": bytes(1_500_000),
        "rootfs.ext4": rng.randbytes(20_000),
        "meta.json": json.dumps({"board": "rpi4", "nested": {"n": 1}, "list": [1, 2]}).encode(),
        "augment-meta.json": json.dumps({"nested": {"m": 2}, "extra": True}).encode(),
        "big-meta.json": json.dumps({"blob": "x" * 300_000}).encode(),
    }
    for name, content in files.items():
        path = workdir / name
        path.write_bytes(content)
        os.utime(path, (FILE_DATE.timestamp(), FILE_DATE.timestamp()))
    key = ec.generate_private_key(ec.SECP256R1())
    (workdir / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return Tool(workdir=workdir, files=files)


@pytest.fixture(scope="session")
def single_file(tool: Tool) -> dict[str, bytes]:
    """The same small module-image artifact in each compression mender-artifact offers."""
    return {
        compression: tool.write(
            "module-image",
            "-T",
            "single-file",
            "-n",
            "release-1",
            "-t",
            "raspberrypi4",
            "-f",
            "hello.txt",
            "--compression",
            compression,
        )
        for compression in ("gzip", "lzma", "none")
    }


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


# --- error cases on real artifacts ----------------------------------------------------------


def members(artifact: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(artifact)) as tar:
        result = []
        for info in tar.getmembers():
            extracted = tar.extractfile(info)
            assert extracted is not None
            result.append((info.name, extracted.read()))
        return result


def offsets(artifact: bytes) -> dict[str, int]:
    """Where each outer member's content starts."""
    with tarfile.open(fileobj=io.BytesIO(artifact)) as tar:
        return {info.name: info.offset_data for info in tar.getmembers()}


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


# --- synthetic artifacts --------------------------------------------------------------------


def tar_bytes(
    entries: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, mtime: float = 1e9
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


Payload = tuple[bytes, dict[str, bytes]]  # type-info, then the files
APP_TYPE_INFO = b'{"type":"app","artifact_provides":{"app.version":"1"}}'


def payload_type(type_info: bytes) -> str:
    """The type header-info declares for a payload: the type-info's, if it has a usable one."""
    try:
        declared = json.loads(type_info).get("type")
    except (ValueError, AttributeError):
        return "app"
    return declared if isinstance(declared, str) else "app"


def synthetic(
    files: dict[str, bytes] | None = None,
    *,
    payloads: list[Payload] | None = None,
    fmt: int = tarfile.USTAR_FORMAT,
    mtime: float = 1e9,
    version: bytes = b'{"format":"mender","version":3}',
    type_info: bytes = APP_TYPE_INFO,
    header_extra: list[tuple[str, bytes]] | None = None,
    edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]] | None = None,
) -> bytes:
    """A v3 artifact with gzip payloads; `edit` changes the outer members before packing."""
    payloads = payloads or [(type_info, files or {})]
    info = {
        "payloads": [{"type": payload_type(info)} for info, _ in payloads],
        "artifact_provides": {"artifact_name": "synthetic"},
        "artifact_depends": {"device_type": ["dev"]},
    }
    header_files = [("header-info", json.dumps(info).encode()), *(header_extra or [])]
    header_files += [(f"headers/{n:04d}/type-info", info) for n, (info, _) in enumerate(payloads)]
    header = gzip.compress(tar_bytes(header_files, fmt))
    listed = {"version": version, "header.tar.gz": header}
    data_members = []
    for n, (_, payload_files) in enumerate(payloads):
        data_members.append(
            (f"data/{n:04d}.tar.gz", gzip.compress(tar_bytes([*payload_files.items()], fmt, mtime)))
        )
        listed |= {f"data/{n:04d}/{name}": content for name, content in payload_files.items()}
    manifest = "".join(f"{sha256(content)}  {path}\n" for path, content in sorted(listed.items()))
    entries = [
        ("version", version),
        ("manifest", manifest.encode()),
        ("header.tar.gz", header),
        *data_members,
    ]
    return tar_bytes(edit(entries) if edit else entries, fmt)


def replace(
    name: str, content: bytes
) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    def edit(entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, content if n == name else c) for n, c in entries]

    return edit


def edit_manifest(
    change: Callable[[str], str],
) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    def edit(entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, change(c.decode()).encode() if n == "manifest" else c) for n, c in entries]

    return edit


class TestTarFlavours:
    @pytest.mark.parametrize("chunk", [1, 4096])
    @pytest.mark.parametrize(
        ("fmt", "mtime"),
        [
            (tarfile.USTAR_FORMAT, 1_700_000_000),
            (tarfile.GNU_FORMAT, 1_700_000_000),
            # pax records keep the fraction of a second
            (tarfile.PAX_FORMAT, 1_700_000_000.25),
        ],
        ids=["ustar", "gnu", "pax"],
    )
    def test_formats(self, fmt: int, mtime: float, chunk: int) -> None:
        files = {"short.txt": b"short"}
        if fmt != tarfile.USTAR_FORMAT:
            # GNU tar writes a long-name entry, pax a path record.
            files["n" * 130 + ".bin"] = b"long"
        # ustar splits a long path at a slash into its prefix field; the parser must join it
        # back to recognise the state script, which is skipped.
        script = ("scripts/" + "s" * 95, b"#!/bin/sh\n")
        artifact = synthetic(files, fmt=fmt, mtime=mtime, header_extra=[script])

        meta = parse(artifact, chunk)

        assert [(f.name, f.size, f.checksum, f.date) for f in meta.updates[0].files] == [
            (name, len(content), sha256(content), datetime.fromtimestamp(mtime, UTC))
            for name, content in sorted(files.items())
        ]
        assert meta.provides == {"artifact_name": "synthetic", "app.version": "1"}


class TestStructure:
    def test_synthetic_is_valid(self) -> None:
        meta = parse(synthetic({"a.txt": b"a"}), 3)

        assert meta.name == "synthetic"
        assert [f.name for f in meta.updates[0].files] == ["a.txt"]

    def test_two_payloads(self) -> None:
        artifact = synthetic(
            payloads=[
                (b'{"type":"app","artifact_provides":{"app.version":"1"}}', {"a.txt": b"a"}),
                (
                    b'{"type":"db","artifact_provides":{"db.version":"9"},'
                    b'"artifact_depends":{"db.engine":["pg","mysql"]},'
                    b'"clears_artifact_provides":["db.*"]}',
                    {"b.txt": b"b", "c.txt": b"c"},
                ),
            ]
        )

        meta = parse(artifact, 7)

        assert [(u.type, [f.name for f in u.files]) for u in meta.updates] == [
            ("app", ["a.txt"]),
            ("db", ["b.txt", "c.txt"]),
        ]
        assert meta.provides == {
            "artifact_name": "synthetic",
            "app.version": "1",
            "db.version": "9",
        }
        assert meta.depends == {"device_type": ["dev"], "db.engine": ["pg", "mysql"]}
        assert meta.clears_provides == ["db.*"]

    def test_payload_data_out_of_order(self) -> None:
        artifact = synthetic(
            payloads=[(APP_TYPE_INFO, {"a.txt": b"a"}), (b'{"type":"other"}', {"b.txt": b"b"})],
            edit=lambda entries: [*entries[:3], entries[4], entries[3]],
        )

        meta = parse(artifact)

        assert [(u.type, [f.name for f in u.files]) for u in meta.updates] == [
            ("app", ["a.txt"]),
            ("other", ["b.txt"]),
        ]

    def test_empty(self) -> None:
        assert parse_error(b"") == "empty artifact"

    @pytest.mark.parametrize(
        "data",
        [b"hello world", b"not a tar archive\n" * 100, gzip.compress(b"x" * 5000)],
        ids=["short", "text", "gzip"],
    )
    def test_not_a_tar(self, data: bytes) -> None:
        assert parse_error(data) == "artifact is not a tar archive"

    @pytest.mark.parametrize(
        ("version", "message"),
        [
            (b'{"format":"mender","version":4}', "unsupported artifact version: 4"),
            (b'{"format":"mender","version":1}', "unsupported artifact version: 1"),
            (b'{"format":"mender","version":"3"}', "unsupported artifact version: '3'"),
            (b'{"format":"other","version":3}', "unsupported artifact format: 'other'"),
            (b'{"format":"mender"}', "unsupported artifact version: None"),
            (b"[3]", "version file must be a JSON object"),
        ],
    )
    def test_wrong_version_file(self, version: bytes, message: str) -> None:
        assert parse_error(synthetic({"a.txt": b"a"}, version=version)) == message

    def test_version_not_utf8(self) -> None:
        message = parse_error(synthetic({"a.txt": b"a"}, version=b"\xff\xfe"))

        assert message == "version file is not valid UTF-8"

    def test_version_not_first(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=lambda entries: entries[1:])

        message = parse_error(artifact)

        assert message == "artifact does not start with a version file (found manifest)"

    def test_manifest_lies_about_checksum(self) -> None:
        wrong = sha256(b"something else")
        artifact = synthetic(
            {"a.txt": b"a", "b.txt": b"b"},
            edit=edit_manifest(
                lambda m: re.sub(r"^\w+(?=  data/0000/b.txt)", wrong, m, flags=re.M)
            ),
        )

        assert parse_error(artifact, 5) == "invalid checksum for data/0000/b.txt"

    def test_manifest_misses_payload_file(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a", "b.txt": b"b"},
            edit=edit_manifest(lambda m: re.sub(r".*data/0000/b.txt\n", "", m)),
        )

        message = parse_error(artifact)

        assert message == "data/0000.tar.gz contains b.txt, which the manifest does not list"

    def test_manifest_lists_absent_file(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"},
            edit=edit_manifest(lambda m: m + f"{sha256(b'')}  data/0000/ghost.txt\n"),
        )

        message = parse_error(artifact)

        assert message == "manifest lists files missing from the artifact: data/0000/ghost.txt"

    def test_manifest_misses_header(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=edit_manifest(lambda m: re.sub(r".*header.tar.gz\n", "", m))
        )

        assert parse_error(artifact) == "manifest does not list header.tar.gz"

    def test_manifest_misses_version(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=edit_manifest(lambda m: re.sub(r".*  version\n", "", m))
        )

        assert parse_error(artifact) == "manifest does not list version"

    def test_garbled_manifest(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=edit_manifest(lambda m: m + "nonsense\n"))

        assert parse_error(artifact) == "garbled line in manifest: 'nonsense'"

    def test_version_checksum(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=replace("version", b'{"format":"mender","version": 3}')
        )

        assert parse_error(artifact) == "invalid checksum for version"

    def test_unexpected_member(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=lambda entries: [*entries, ("extra.txt", b"surprise")]
        )

        assert parse_error(artifact) == "unexpected file extra.txt in artifact"

    def test_payload_without_header_entry(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=lambda entries: [*entries, ("data/0001.tar.gz", b"")]
        )

        assert parse_error(artifact) == "data/0001.tar.gz does not belong to any payload"

    def test_duplicate_payload(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=lambda entries: [*entries, entries[-1]])

        assert parse_error(artifact) == "duplicate payload data/0000.tar.gz"

    def test_missing_header(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=lambda entries: entries[:2])

        assert parse_error(artifact) == "artifact has no header"

    def test_trailing_garbage(self) -> None:
        artifact = synthetic({"a.txt": b"a"}) + b"garbage"

        assert parse_error(artifact) == "artifact: unexpected data after the end of the tar"

    def test_trailing_zeros(self) -> None:
        assert parse(synthetic({"a.txt": b"a"}) + bytes(10240)).name == "synthetic"

    def test_bad_type_info(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, type_info=b'{"type":"app","artifact_provides":{"k":1}}'
        )

        assert parse_error(artifact) == (
            "headers/0000/type-info: artifact_provides.k must be a string"
        )

    @pytest.mark.parametrize(
        ("type_info", "message"),
        [
            (b'{"type":"app"', "headers/0000/type-info is not valid JSON (Expecting"),
            (b'{"type":"app","n":NaN}', "headers/0000/type-info is not valid JSON (NaN"),
            (b'{"type":"app","n":1e999}', "headers/0000/type-info is not valid JSON (number"),
            (
                b'{"type":"app","x":"\\ud800"}',
                "headers/0000/type-info contains an invalid unicode escape",
            ),
            (b"\xff", "headers/0000/type-info is not valid UTF-8"),
            (b"[]", "headers/0000/type-info must be a JSON object"),
            (b'{"type":5}', "headers/0000/type-info: type must be a string"),
        ],
    )
    def test_bad_type_info_json(self, type_info: bytes, message: str) -> None:
        assert parse_error(synthetic({"a.txt": b"a"}, type_info=type_info)).startswith(message)

    def test_conflicting_provides(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"},
            type_info=b'{"type":"app","artifact_provides":{"artifact_name":"other"}}',
        )

        assert parse_error(artifact) == "conflicting keys in the artifact provides: artifact_name"

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


class TestParserUse:
    def test_error_sticks(self) -> None:
        parser = ArtifactParser()
        with pytest.raises(ArtifactError, match="not a tar archive") as first:
            parser.feed(b"x" * 1024)
        with pytest.raises(ArtifactError) as again:
            parser.feed(b"more")
        assert again.value is first.value
        with pytest.raises(ArtifactError):
            parser.finish()

    def test_finish_once(self) -> None:
        parser = ArtifactParser()
        parser.feed(synthetic({"a.txt": b"a"}))
        parser.finish()
        with pytest.raises(RuntimeError):
            parser.finish()
        with pytest.raises(RuntimeError):
            parser.feed(b"")
