"""Push-based tar reader (ustar, pax and GNU long names) that reports members to a sink.

Bytes arrive in any chunking. Each header is checked (checksum, numbers, extended records)
and the member's content is handed to the sink as it streams past, so nothing larger than
one 512-byte block and the extended headers (at most 1 MiB) is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Protocol

from services.deployments.artifact.errors import ArtifactError

__all__ = ["TarMember", "TarSink", "TarStream"]

_BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(_BLOCK)
_MAX_TAR_EXTENSION: Final = 1024 * 1024  # pax records and GNU long names

_S_HEADER: Final = 0
_S_DATA: Final = 1
_S_PAD: Final = 2
_S_EXTENSION: Final = 3
_S_END: Final = 4

_REGULAR_TYPES: Final = frozenset({"0", "\0", "7"})
# Go's archive/tar ignores the size field of these, and so do we.
_HEADER_ONLY_TYPES: Final = frozenset({"1", "2", "3", "4", "5", "6"})
_EXTENSION_TYPES: Final = frozenset({"x", "g", "L", "K"})
_PAX_TIME: Final = re.compile(r"-?[0-9]{1,12}(\.[0-9]{0,9})?")


@dataclass(frozen=True, slots=True)
class TarMember:
    """One member's header: name, size, modification time, kind and tar type flag."""

    name: str
    size: int
    mtime: float
    kind: str  # "file", "dir" or "other"
    typeflag: str

    def describe(self) -> str:
        """What the member is, in words, for refusing anything but a file."""
        if self.kind == "dir":
            return "directory"
        if self.typeflag in ("1", "2"):
            return "link"
        return f"tar entry of type {self.typeflag!r}"


class TarSink(Protocol):
    """Receives the members of a tar stream, one after another."""

    def begin(self, member: TarMember) -> None:
        """A member starts; its content follows through `data`."""

    def data(self, chunk: memoryview) -> None:
        """The next piece of the current member's content."""

    def end(self) -> None:
        """The current member is complete."""


class TarStream:
    """Reads one tar archive pushed in pieces; `outer` names truncation as the artifact's."""

    def __init__(self, sink: TarSink, label: str, *, outer: bool = False) -> None:
        self._sink = sink
        self._label = label
        self._outer = outer
        self._state = _S_HEADER
        self._block = bytearray()
        self._remaining = 0
        self._padding = 0
        self._zero_blocks = 0
        self._headers = 0
        self._member: TarMember | None = None
        self._extension = bytearray()
        self._extension_type = ""
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._received = 0

    def feed(self, data: memoryview) -> None:
        """Consume the next piece of the archive, reporting members to the sink."""
        self._received += len(data)
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _S_DATA:
                take = min(self._remaining, end - pos)
                self._sink.data(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._end_member()
            elif state == _S_PAD:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _S_HEADER
            elif state == _S_HEADER:
                if not self._block and end - pos >= _BLOCK:
                    block = data[pos : pos + _BLOCK].tobytes()
                    pos += _BLOCK
                else:
                    take = min(_BLOCK - len(self._block), end - pos)
                    self._block += data[pos : pos + take]
                    pos += take
                    if len(self._block) < _BLOCK:
                        continue
                    block = bytes(self._block)
                    self._block.clear()
                self._header(block)
            elif state == _S_EXTENSION:
                take = min(self._remaining, end - pos)
                self._extension += data[pos : pos + take]
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._apply_extension()
            else:
                # Writers may pad the archive with zero blocks; anything else is suspicious.
                if data[pos:end].tobytes().strip(b"\0"):
                    raise ArtifactError(f"{self._label}: unexpected data after the end of the tar")
                pos = end

    def close(self) -> None:
        """Check that the archive ended with its end marker."""
        if self._state == _S_END:
            return
        if self._outer:
            if self._received == 0:
                raise ArtifactError("empty artifact")
            if self._headers == 0 and self._received < _BLOCK:
                raise ArtifactError("artifact is not a tar archive")
            if self._member is not None:
                raise ArtifactError(f"truncated artifact (it ends inside {self._member.name})")
            raise ArtifactError("truncated artifact")
        if self._received == 0:
            raise ArtifactError(f"{self._label} is empty")
        raise ArtifactError(f"{self._label}: truncated tar archive")

    def _header(self, block: bytes) -> None:
        if block == _ZERO_BLOCK:
            if self._pax or self._long_name is not None:
                raise ArtifactError(
                    f"{self._label}: corrupt tar archive (dangling extended header)"
                )
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                self._state = _S_END
            return
        if self._zero_blocks:
            raise ArtifactError(f"{self._label}: corrupt tar archive (header after end marker)")
        if not _checksum_ok(block):
            if self._headers == 0:
                raise ArtifactError(f"{self._label} is not a tar archive")
            raise ArtifactError(f"{self._label}: corrupt tar header (bad checksum)")
        self._headers += 1
        typeflag = chr(block[156])
        size = _tar_number(block[124:136], self._label)
        if typeflag in _EXTENSION_TYPES:
            if size > _MAX_TAR_EXTENSION:
                raise ArtifactError(f"{self._label}: tar extended header is too large")
            self._extension_type = typeflag
            self._extension.clear()
            self._remaining = size
            self._padding = -size % _BLOCK
            self._state = _S_EXTENSION
            if not size:
                self._apply_extension()
            return

        name = self._header_name(block)
        mtime: float = _tar_number(block[136:148], self._label)
        if "size" in self._pax:
            size = _pax_int(self._pax["size"], self._label)
        if "mtime" in self._pax:
            mtime = _pax_time(self._pax["mtime"], self._label)
        self._pax = {}
        self._long_name = None

        if typeflag in _HEADER_ONLY_TYPES:
            size = 0
        kind = "file" if typeflag in _REGULAR_TYPES else "dir" if typeflag == "5" else "other"
        member = TarMember(name=name, size=size, mtime=mtime, kind=kind, typeflag=typeflag)
        self._member = member
        self._sink.begin(member)
        self._remaining = size
        self._padding = -size % _BLOCK
        if size:
            self._state = _S_DATA
        else:
            self._end_member()

    def _header_name(self, block: bytes) -> str:
        if self._long_name is not None:
            return self._long_name
        if "path" in self._pax:
            return self._pax["path"]
        raw = _cstring(block[0:100])
        # Only POSIX ustar has a prefix field; GNU tar keeps other data at that offset.
        if block[257:265] == b"ustar\x0000":
            prefix = _cstring(block[345:500])
            if prefix:
                raw = prefix + b"/" + raw
        return _decode_name(raw, self._label)

    def _end_member(self) -> None:
        self._sink.end()
        self._member = None
        self._remaining = self._padding
        self._state = _S_PAD if self._padding else _S_HEADER

    def _apply_extension(self) -> None:
        raw = bytes(self._extension)
        self._extension.clear()
        if self._extension_type == "x":
            self._pax.update(_parse_pax(raw, self._label))
            for key in self._pax:
                if key.startswith("GNU.sparse."):
                    raise ArtifactError(f"{self._label}: sparse tar members are not supported")
        elif self._extension_type == "L":
            self._long_name = _decode_name(_cstring(raw), self._label)
        elif self._extension_type == "g":
            # Global pax headers only carry defaults Fleetport has no use for.
            _parse_pax(raw, self._label)
        # "K" (a GNU long link name) is irrelevant: links are refused further up.
        self._remaining = self._padding
        self._state = _S_PAD if self._padding else _S_HEADER


def _cstring(field: bytes) -> bytes:
    nul = field.find(b"\0")
    return field if nul < 0 else field[:nul]


def _decode_name(raw: bytes, label: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{label}: tar member name is not valid UTF-8") from None


def _checksum_ok(block: bytes) -> bool:
    field = block[148:156]
    digits = _cstring(field).strip(b" ")
    if not digits or not all(0x30 <= b <= 0x37 for b in digits):
        return False
    stored = int(digits, 8)
    # The checksum field itself counts as eight spaces.
    unsigned = sum(block) - sum(field) + 8 * 0x20
    # Some historic writers summed signed chars; Go and GNU tar accept either.
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b & 0x80)
    return stored in (unsigned, signed)


def _tar_number(field: bytes, label: str) -> int:
    if field and field[0] & 0x80:
        # GNU base-256: the high bit of the first byte flags it, 0xff would be negative.
        if field[0] == 0xFF:
            raise ArtifactError(f"{label}: corrupt tar header (negative number)")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    digits = _cstring(field).strip(b" ")
    if not digits:
        return 0
    if not all(0x30 <= b <= 0x37 for b in digits):
        raise ArtifactError(f"{label}: corrupt tar header (bad number)")
    return int(digits, 8)


def _parse_pax(raw: bytes, label: str) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        space = raw.find(b" ", pos)
        length_text = raw[pos:space] if space > pos else b""
        if not length_text.isdigit() or len(length_text) > 8:
            raise ArtifactError(f"{label}: corrupt pax header")
        length = int(length_text)
        record_end = pos + length
        if record_end > len(raw) or record_end <= space + 1 or raw[record_end - 1] != 0x0A:
            raise ArtifactError(f"{label}: corrupt pax header")
        key, eq, value = raw[space + 1 : record_end - 1].partition(b"=")
        if not eq or not key:
            raise ArtifactError(f"{label}: corrupt pax header")
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"{label}: corrupt pax header (not UTF-8)") from None
        pos = record_end
    return records


def _pax_int(text: str, label: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise ArtifactError(f"{label}: corrupt pax header (bad size)")
    return int(text)


def _pax_time(text: str, label: str) -> float:
    if _PAX_TIME.fullmatch(text) is None:
        raise ArtifactError(f"{label}: corrupt pax header (bad mtime)")
    return float(text)
