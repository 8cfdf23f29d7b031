"""The tar reader: tar flavours through the whole reader, then the stream on its own."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime

import pytest

from services.deployments.artifact import ArtifactError
from services.deployments.artifact.tar import TarMember, TarStream
from tests.deployments.artifact.builders import parse, sha256, synthetic

LABEL = "inner.tar"
END = bytes(1024)
MTIME = 1_700_000_000


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


# --- the stream on its own ------------------------------------------------------------------


class Collector:
    """A tar sink that keeps every member with its content."""

    def __init__(self) -> None:
        self.members: list[tuple[TarMember, bytes]] = []
        self._current: TarMember | None = None
        self._content = bytearray()

    def begin(self, member: TarMember) -> None:
        self._current = member
        self._content = bytearray()

    def data(self, chunk: memoryview) -> None:
        self._content += chunk

    def end(self) -> None:
        assert self._current is not None
        self.members.append((self._current, bytes(self._content)))
        self._current = None


def read(
    data: bytes, chunk: int | None = None, *, outer: bool = False
) -> list[tuple[TarMember, bytes]]:
    """Push `data` through a tar stream in pieces of `chunk` bytes and close it."""
    collector = Collector()
    stream = TarStream(collector, LABEL, outer=outer)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        stream.feed(memoryview(data)[start : start + step])
    stream.close()
    return collector.members


def read_error(data: bytes, *, outer: bool = False) -> str:
    """The message the tar stream refuses `data` with."""
    with pytest.raises(ArtifactError) as info:
        read(data, outer=outer)
    return info.value.message


def header(
    name: bytes,
    *,
    size: int = 0,
    typeflag: bytes = b"0",
    size_field: bytes | None = None,
    prefix: bytes = b"",
    gnu: bool = False,
    signed: bool = False,
) -> bytes:
    """One header block with a valid checksum, summed as signed chars if `signed`."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size if size_field is None else size_field
    block[136:148] = b"%011o\0" % MTIME
    block[156:157] = typeflag
    block[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b" " * 8
    checksum = sum(block) - (256 * sum(1 for b in block if b & 0x80) if signed else 0)
    block[148:156] = b"%06o\0 " % checksum
    return bytes(block)


def member(
    name: bytes,
    content: bytes = b"",
    *,
    typeflag: bytes = b"0",
    prefix: bytes = b"",
    gnu: bool = False,
    signed: bool = False,
) -> bytes:
    """A header and its content, padded to whole blocks."""
    block = header(
        name, size=len(content), typeflag=typeflag, prefix=prefix, gnu=gnu, signed=signed
    )
    return block + content + bytes(-len(content) % 512)


def pax_record(key: str, value: str) -> bytes:
    """One `length key=value\\n` record, its length counting itself."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: dict[str, str], typeflag: bytes = b"x") -> bytes:
    """A pax extended header member carrying `records`."""
    body = b"".join(pax_record(key, value) for key, value in records.items())
    return member(b"PaxHeader", body, typeflag=typeflag)


class TestTarStream:
    @pytest.mark.parametrize("chunk", [1, 7, 512, None])
    def test_members_in_any_chunking(self, chunk: int | None) -> None:
        files = {"empty": b"", "one": b"1", "block": b"b" * 512, "more": bytes(range(256)) * 5}
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mtime = MTIME
                archive.addfile(info, io.BytesIO(content))

        members = read(out.getvalue(), chunk)

        assert [(m.name, m.size, m.mtime, m.kind, c) for m, c in members] == [
            (name, len(content), MTIME, "file", content) for name, content in files.items()
        ]

    def test_pax_header_with_a_long_name(self) -> None:
        name = "dir/" + "n" * 250 + ".bin"
        records = {"path": name, "mtime": "1700000000.5", "size": "3"}
        # The pax records win over the ustar fields (a cut name and a zero size here).
        data = pax(records) + header(b"n" * 100) + b"abc" + bytes(509) + END

        [(found, content)] = read(data, 7)

        assert (found.name, found.size, found.mtime, content) == (name, 3, 1_700_000_000.5, b"abc")

    def test_gnu_long_name(self) -> None:
        name = "l" * 300
        long_name = member(b"././@LongLink", name.encode() + b"\0", typeflag=b"L", gnu=True)
        data = long_name + member(b"l" * 100, b"x", gnu=True) + END

        [(found, content)] = read(data)

        assert (found.name, content) == (name, b"x")

    def test_global_pax_header_ignored(self) -> None:
        data = pax({"comment": "made here"}, typeflag=b"g") + member(b"a.txt", b"a") + END

        assert [(m.name, c) for m, c in read(data)] == [("a.txt", b"a")]

    def test_ustar_prefix_joined(self) -> None:
        data = member(b"name.txt", b"", prefix=b"some/dir") + END

        assert [m.name for m, _ in read(data)] == ["some/dir/name.txt"]

    def test_gnu_header_has_no_prefix(self) -> None:
        data = member(b"name.txt", b"", prefix=b"not/a/prefix", gnu=True) + END

        assert [m.name for m, _ in read(data)] == ["name.txt"]

    def test_signed_checksum_accepted(self) -> None:
        data = member("café.txt".encode(), b"c", signed=True) + END

        assert [(m.name, c) for m, c in read(data)] == [("café.txt", b"c")]

    def test_base256_size(self) -> None:
        size_field = b"\x80" + (5).to_bytes(11, "big")
        data = header(b"big", size_field=size_field) + b"12345" + bytes(507) + END

        assert [(m.size, c) for m, c in read(data)] == [(5, b"12345")]

    def test_kinds(self) -> None:
        # A hard link's size field is ignored: no content follows it.
        data = (
            member(b"dir/", typeflag=b"5")
            + header(b"hard", typeflag=b"1", size=100)
            + member(b"sym", typeflag=b"2")
            + member(b"fifo", typeflag=b"6")
            + member(b"contiguous", b"c", typeflag=b"7")
            + END
        )

        members = [m for m, _ in read(data)]

        assert [(m.name, m.kind, m.size) for m in members] == [
            ("dir/", "dir", 0),
            ("hard", "other", 0),
            ("sym", "other", 0),
            ("fifo", "other", 0),
            ("contiguous", "file", 1),
        ]
        assert [m.describe() for m in members[:4]] == [
            "directory",
            "link",
            "link",
            "tar entry of type '6'",
        ]

    def test_zero_padding_after_the_end(self) -> None:
        assert len(read(member(b"a", b"a") + END + bytes(10240))) == 1

    def test_data_after_the_end(self) -> None:
        message = read_error(member(b"a", b"a") + END + b"junk")

        assert message == "inner.tar: unexpected data after the end of the tar"

    def test_header_after_end_marker(self) -> None:
        message = read_error(member(b"a", b"a") + bytes(512) + member(b"b", b"b") + END)

        assert message == "inner.tar: corrupt tar archive (header after end marker)"

    def test_dangling_extended_header(self) -> None:
        message = read_error(pax({"path": "x"}) + END)

        assert message == "inner.tar: corrupt tar archive (dangling extended header)"

    def test_not_a_tar(self) -> None:
        assert read_error(b"x" * 1024) == "inner.tar is not a tar archive"

    def test_bad_checksum(self) -> None:
        damaged = bytearray(member(b"b", b"b"))
        damaged[0] = ord("c")

        message = read_error(member(b"a", b"a") + bytes(damaged) + END)

        assert message == "inner.tar: corrupt tar header (bad checksum)"

    @pytest.mark.parametrize(
        ("size_field", "message"),
        [
            (b"0000000009x\0", "inner.tar: corrupt tar header (bad number)"),
            (b"\xff" * 12, "inner.tar: corrupt tar header (negative number)"),
        ],
        ids=["octal", "base256"],
    )
    def test_bad_number(self, size_field: bytes, message: str) -> None:
        assert read_error(header(b"a", size_field=size_field) + END) == message

    def test_name_not_utf8(self) -> None:
        message = read_error(member(b"\xff.txt") + END)

        assert message == "inner.tar: tar member name is not valid UTF-8"

    def test_extended_header_too_large(self) -> None:
        message = read_error(header(b"PaxHeader", typeflag=b"x", size=1024 * 1024 + 1))

        assert message == "inner.tar: tar extended header is too large"

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"garbage\n", "inner.tar: corrupt pax header"),
            (b"99 path=x\n", "inner.tar: corrupt pax header"),
            (b"7 path\n", "inner.tar: corrupt pax header"),
            (b"11 path=\xff\xfe\n", "inner.tar: corrupt pax header (not UTF-8)"),
            (pax_record("size", "12a"), "inner.tar: corrupt pax header (bad size)"),
            (pax_record("mtime", "soon"), "inner.tar: corrupt pax header (bad mtime)"),
            (
                pax_record("GNU.sparse.major", "1"),
                "inner.tar: sparse tar members are not supported",
            ),
        ],
        ids=["no-length", "overlong", "no-equals", "not-utf8", "size", "mtime", "sparse"],
    )
    def test_corrupt_pax_header(self, body: bytes, message: str) -> None:
        data = member(b"PaxHeader", body, typeflag=b"x") + member(b"a", b"a") + END

        assert read_error(data) == message

    @pytest.mark.parametrize("cut", [100, 515, 600, 1024, 1536], ids=lambda cut: f"at-{cut}")
    def test_truncated(self, cut: int) -> None:
        data = member(b"a.txt", b"hello") + END

        assert read_error(data[:cut]) == "inner.tar: truncated tar archive"

    def test_empty(self) -> None:
        assert read_error(b"") == "inner.tar is empty"

    @pytest.mark.parametrize(
        ("cut", "message"),
        [
            (0, "empty artifact"),
            (100, "artifact is not a tar archive"),
            (515, "truncated artifact (it ends inside a.txt)"),
            (1024, "truncated artifact"),
        ],
    )
    def test_truncated_artifact(self, cut: int, message: str) -> None:
        data = member(b"a.txt", b"hello") + END

        assert read_error(data[:cut], outer=True) == message
