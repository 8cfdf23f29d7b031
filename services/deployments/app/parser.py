"""Streaming, push-based reader for Mender artifacts (format versions 2 and 3).

An artifact is an uncompressed tar holding, in this order: `version`, `manifest` (sha256 of
every other file), optional `manifest.sig`, optional `manifest-augment`, `header.tar[.gz|.xz|
.zst]`, optional `header-augment.tar[...]`, then one `data/NNNN.tar[...]` per payload. The
parser is fed the upload chunk by chunk: payload bytes are hashed and dropped, and only the
small metadata files are kept in memory, each under a cap. `finish()` returns what Mender's
deployments service extracts (`getMetaFromArchive`) once every checksum has been verified.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

__all__ = [
    "MAX_HEADER_SIZE",
    "ArtifactError",
    "ArtifactMeta",
    "ArtifactParser",
    "Update",
    "UpdateFile",
]

MAX_HEADER_SIZE: Final = 10 * 1024 * 1024
"""Default cap on `header.tar*`, both as stored and once decompressed."""

_MAX_SMALL_FILE: Final = 1024 * 1024  # version, manifest, manifest.sig, manifest-augment
_MAX_TAR_EXTENSION: Final = 1024 * 1024  # pax records and GNU long names
_DECOMPRESS_CHUNK: Final = 64 * 1024  # most decompressed bytes produced per step
# xz streams made with `xz -9` need 65 MiB to decode; larger dictionaries are refused.
_XZ_MEMORY_LIMIT: Final = 96 * 1024 * 1024
_BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(_BLOCK)

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_DATA_MEMBER: Final = re.compile(r"data/([0-9]+)\.tar(|\.gz|\.xz|\.zst)")
_HEADER_MEMBER: Final = re.compile(r"header(-augment)?\.tar(|\.gz|\.xz|\.zst)")
_PAYLOAD_PATH: Final = re.compile(r"data/([0-9]{4})/([^/]+)")
_HEADER_PATH: Final = re.compile(r"headers/([0-9]+)/(.+)")
# NOTE: the character set mender-artifact's reader allows in payload file names.
_PAYLOAD_FILE_NAME: Final = re.compile(r"[A-Za-z0-9_.,-]+")

_COMPRESSIONS: Final = {"": "none", ".gz": "gzip", ".xz": "xz", ".zst": "zstd"}


class ArtifactError(Exception):
    """The artifact is malformed, corrupt, truncated or disagrees with its manifest."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class UpdateFile:
    """One payload file: its name, sha256 (hex), size in bytes and tar modification time."""

    name: str
    checksum: str
    size: int
    date: datetime


@dataclass(frozen=True, slots=True)
class Update:
    """One payload: its type, files and meta-data (a list of at most one object, as Mender)."""

    type: str | None
    files: list[UpdateFile]
    meta_data: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ArtifactMeta:
    """What an artifact declares, with provides and depends merged across its payloads."""

    format: str
    version: int
    name: str
    device_types_compatible: list[str]
    signed: bool
    provides: dict[str, str]
    depends: dict[str, Any]
    clears_provides: list[str]
    updates: list[Update]


class ArtifactParser:
    """Incremental artifact reader: `feed()` the bytes in any chunking, then `finish()`."""

    def __init__(self, *, max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._reader = _ArtifactReader(max_header_size=max_header_size)
        self._tar = _TarStream(self._reader, "artifact", outer=True)
        self._error: ArtifactError | None = None
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        """Consume the next piece of the artifact; raises `ArtifactError` as soon as it can."""
        if self._finished:
            raise RuntimeError("feed() called after finish()")
        if self._error is not None:
            raise self._error
        if not chunk:
            return
        try:
            self._tar.feed(memoryview(chunk).cast("B"))
        except ArtifactError as exc:
            self._error = exc
            raise

    def finish(self) -> ArtifactMeta:
        """Check that the artifact is complete and consistent and return its metadata."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        if self._error is not None:
            raise self._error
        self._finished = True
        try:
            self._tar.close()
            return self._reader.result()
        except ArtifactError as exc:
            self._error = exc
            raise


# --- tar ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    size: int
    mtime: float
    kind: str  # "file", "dir" or "other"
    typeflag: str


class _TarSink(Protocol):
    def begin(self, member: _Member) -> None: ...

    def data(self, chunk: memoryview) -> None: ...

    def end(self) -> None: ...


_S_HEADER: Final = 0
_S_DATA: Final = 1
_S_PAD: Final = 2
_S_EXTENSION: Final = 3
_S_END: Final = 4

_REGULAR_TYPES: Final = frozenset({"0", "\0", "7"})
# Go's archive/tar ignores the size field of these, and so do we.
_HEADER_ONLY_TYPES: Final = frozenset({"1", "2", "3", "4", "5", "6"})
_EXTENSION_TYPES: Final = frozenset({"x", "g", "L", "K"})


class _TarStream:
    """Push-based tar reader (ustar, pax and GNU long names) reporting members to a sink."""

    def __init__(self, sink: _TarSink, label: str, *, outer: bool = False) -> None:
        self._sink = sink
        self._label = label
        self._outer = outer
        self._state = _S_HEADER
        self._block = bytearray()
        self._remaining = 0
        self._padding = 0
        self._zero_blocks = 0
        self._headers = 0
        self._member: _Member | None = None
        self._extension = bytearray()
        self._extension_type = ""
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._received = 0

    def feed(self, data: memoryview) -> None:
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
        member = _Member(name=name, size=size, mtime=mtime, kind=kind, typeflag=typeflag)
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
    if not re.fullmatch(r"-?[0-9]{1,12}(\.[0-9]{0,9})?", text):
        raise ArtifactError(f"{label}: corrupt pax header (bad mtime)")
    return float(text)


# --- decompression --------------------------------------------------------------------------

_Output = Callable[[memoryview], None]


class _Decoder(Protocol):
    def feed(self, data: memoryview) -> None: ...

    def close(self) -> None: ...


class _Plain:
    def __init__(self, out: _Output) -> None:
        self._out = out

    def feed(self, data: memoryview) -> None:
        self._out(data)

    def close(self) -> None:
        pass


class _Gzip:
    """Gzip, including concatenated members (Go's reader accepts them too)."""

    def __init__(self, out: _Output, label: str) -> None:
        self._out = out
        self._label = label
        self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self._started = False

    def feed(self, data: memoryview) -> None:
        try:
            self._feed(data)
        except zlib.error as exc:
            raise ArtifactError(f"{self._label}: corrupt gzip data ({exc})") from exc

    def _feed(self, data: memoryview | bytes) -> None:
        pending: memoryview | bytes = data
        while pending:
            if self._inflater.eof:
                self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            self._started = True
            while True:
                chunk = self._inflater.decompress(pending, _DECOMPRESS_CHUNK)
                if chunk:
                    self._out(memoryview(chunk))
                pending = self._inflater.unconsumed_tail
                if self._inflater.eof:
                    pending = self._inflater.unused_data
                    break
                # A full chunk may leave output buffered inside zlib even with no input left.
                if not pending and len(chunk) < _DECOMPRESS_CHUNK:
                    return

    def close(self) -> None:
        if not self._started:
            raise ArtifactError(f"{self._label} is empty")
        if not self._inflater.eof:
            raise ArtifactError(f"{self._label}: truncated gzip data")


class _Xz:
    def __init__(self, out: _Output, label: str) -> None:
        self._out = out
        self._label = label
        self._decoder = self._new_decoder()
        self._started = False

    @staticmethod
    def _new_decoder() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMORY_LIMIT)

    def feed(self, data: memoryview) -> None:
        try:
            self._feed(data.tobytes())
        except (lzma.LZMAError, EOFError) as exc:
            if "memory usage limit" in str(exc).lower():
                limit = _XZ_MEMORY_LIMIT // (1024 * 1024)
                raise ArtifactError(
                    f"{self._label}: xz data needs more than {limit} MiB to decompress"
                ) from exc
            raise ArtifactError(f"{self._label}: corrupt xz data ({exc})") from exc

    def _feed(self, data: bytes) -> None:
        pending = data
        while pending or not self._decoder.needs_input:
            if self._decoder.eof:
                # xz allows zero "stream padding" between and after streams.
                pending = pending.lstrip(b"\0")
                if not pending:
                    return
                self._decoder = self._new_decoder()
            self._started = True
            chunk = self._decoder.decompress(pending, _DECOMPRESS_CHUNK)
            pending = b""
            if chunk:
                self._out(memoryview(chunk))
            if self._decoder.eof:
                pending = self._decoder.unused_data

    def close(self) -> None:
        if not self._started:
            raise ArtifactError(f"{self._label} is empty")
        if not self._decoder.eof:
            raise ArtifactError(f"{self._label}: truncated xz data")


def _decoder(compression: str, out: _Output, label: str) -> _Decoder:
    if compression == "gzip":
        return _Gzip(out, label)
    if compression == "xz":
        return _Xz(out, label)
    if compression == "zstd":
        raise ArtifactError(f"{label}: zstd compression is not supported by this server")
    return _Plain(out)


# --- JSON helpers ---------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _load_json(raw: bytes, label: str) -> Any:
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        # Escaped lone surrogates decode fine but could never be stored or sent back.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{label} is not valid UTF-8") from None
    except UnicodeEncodeError:
        raise ArtifactError(f"{label} contains an invalid unicode escape") from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{label} is not valid JSON ({exc})") from None
    return value


def _object(value: Any, label: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ArtifactError(f"{label} must be a JSON object")
    return value


def _optional_object(value: Any, label: str) -> dict[str, Any]:
    return {} if value is None else _object(value, label)


def _string_list(value: Any, label: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ArtifactError(f"{label} must be a list of strings")
    return list(value)


def _optional_string_list(value: Any, label: str) -> list[str]:
    return [] if value is None else _string_list(value, label)


def _optional_string(value: Any, label: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ArtifactError(f"{label} must be a string")
    return value


def _string_map(value: Any, label: str) -> dict[str, str]:
    mapping = _optional_object(value, label)
    for key, item in mapping.items():
        if not isinstance(item, str):
            raise ArtifactError(f"{label}.{key} must be a string")
    return dict(mapping)


def _depends_map(value: Any, label: str) -> dict[str, Any]:
    mapping = _optional_object(value, label)
    for key, item in mapping.items():
        if not isinstance(item, str):
            _string_list(item, f"{label}.{key}")
    return dict(mapping)


def _merge_json(original: dict[str, Any], override: dict[str, Any], label: str) -> dict[str, Any]:
    """Merge an augment section into the original one, as mender-artifact does."""
    merged = dict(original)
    for key, value in override.items():
        if key not in merged:
            merged[key] = value
            continue
        current = merged[key]
        if isinstance(value, dict):
            if not isinstance(current, dict):
                raise ArtifactError(f"{label}.{key}: cannot combine an object with a non-object")
            merged[key] = _merge_json(current, value, f"{label}.{key}")
        elif isinstance(value, list) != isinstance(current, list) or isinstance(current, dict):
            raise ArtifactError(f"{label}.{key}: conflicting types in the augmented header")
        else:
            merged[key] = value
    return merged


# --- the artifact ---------------------------------------------------------------------------


class _MemberHandler(Protocol):
    def data(self, chunk: memoryview) -> None: ...

    def end(self) -> None: ...


class _Buffered:
    """Keeps one small member in memory and hands it over when complete."""

    def __init__(self, on_complete: Callable[[bytes], None]) -> None:
        self._buffer = bytearray()
        self._on_complete = on_complete

    def data(self, chunk: memoryview) -> None:
        self._buffer += chunk

    def end(self) -> None:
        self._on_complete(bytes(self._buffer))


@dataclass(slots=True)
class _Checksum:
    expected: str
    seen: bool = False


@dataclass(slots=True)
class _ReceivedFile:
    checksum: str
    size: int
    date: datetime


@dataclass(slots=True)
class _Payload:
    """One payload as collected from the headers and the data member."""

    header_type: str | None
    type_info: dict[str, Any] | None = None
    meta_data: dict[str, Any] | None = None
    files_list: list[str] | None = None  # version 2 only
    augment_header_type: str | None = None
    augment_type_info: dict[str, Any] | None = None
    augment_meta_data: dict[str, Any] | None = None
    manifest_files: list[str] = field(default_factory=list)
    augment_files: list[str] = field(default_factory=list)
    allowed_files: set[str] = field(default_factory=set)
    received: dict[str, _ReceivedFile] = field(default_factory=dict)
    data_seen: bool = False


_ST_VERSION: Final = "version"
_ST_MANIFEST: Final = "manifest"
_ST_HEADERS: Final = "headers"  # after the manifest, up to and including the header
_ST_AUGMENT: Final = "augment"  # the header-augment must come next
_ST_DATA: Final = "data"


class _ArtifactReader:
    """Receives the members of the outer tar and enforces the artifact's structure."""

    def __init__(self, *, max_header_size: int) -> None:
        self._max_header_size = max_header_size
        self._stage = _ST_VERSION
        self._handler: _MemberHandler | None = None
        self._version = 0
        self._format = ""
        self._version_raw = b""
        self._checksums: dict[str, _Checksum] = {}
        self._has_augment = False
        self._signed = False
        self._name = ""
        self._device_types: list[str] = []
        self._header_provides: dict[str, str] = {}
        self._header_depends: dict[str, Any] = {}
        self._payloads: list[_Payload] = []
        self._manifest_data: list[tuple[int, str]] = []
        self._augment_data: list[tuple[int, str]] = []

    # _TarSink

    def begin(self, member: _Member) -> None:
        name = member.name
        if member.kind != "file":
            raise ArtifactError(f"unexpected {_describe(member)} in artifact: {name}")
        self._handler = self._open(name, member)

    def data(self, chunk: memoryview) -> None:
        assert self._handler is not None
        self._handler.data(chunk)

    def end(self) -> None:
        assert self._handler is not None
        handler, self._handler = self._handler, None
        handler.end()

    # structure

    def _open(self, name: str, member: _Member) -> _MemberHandler:
        stage = self._stage
        if stage == _ST_VERSION:
            if name != "version":
                raise ArtifactError(f"artifact does not start with a version file (found {name})")
            return self._small(member, self._read_version)
        if stage == _ST_MANIFEST:
            if name != "manifest":
                raise ArtifactError(f"expected manifest after version, found {name}")
            return self._small(member, self._read_manifest)
        if stage == _ST_HEADERS:
            if name == "manifest.sig" and not self._signed and not self._has_augment:
                self._signed = True
                return self._small(member, lambda _raw: None)
            if name == "manifest-augment" and self._version == 3 and not self._has_augment:
                self._has_augment = True
                return self._small(member, self._read_augment_manifest)
            match = _HEADER_MEMBER.fullmatch(name)
            if match is not None and not match.group(1):
                self._stage = _ST_AUGMENT if self._has_augment else _ST_DATA
                return self._header(name, member, _COMPRESSIONS[match.group(2)], augment=False)
            raise ArtifactError(f"unexpected file {name} in artifact (expected the header)")
        if stage == _ST_AUGMENT:
            match = _HEADER_MEMBER.fullmatch(name)
            if match is None or not match.group(1):
                raise ArtifactError(f"expected header-augment after the header, found {name}")
            self._stage = _ST_DATA
            return self._header(name, member, _COMPRESSIONS[match.group(2)], augment=True)
        match = _DATA_MEMBER.fullmatch(name)
        if match is None:
            raise ArtifactError(f"unexpected file {name} in artifact")
        index = int(match.group(1))
        if index >= len(self._payloads):
            raise ArtifactError(f"{name} does not belong to any payload")
        payload = self._payloads[index]
        if payload.data_seen:
            raise ArtifactError(f"duplicate payload {name}")
        payload.data_seen = True
        return _PayloadMember(self, index, name, _COMPRESSIONS[match.group(2)])

    def _small(self, member: _Member, on_complete: Callable[[bytes], None]) -> _Buffered:
        if member.size > _MAX_SMALL_FILE:
            raise ArtifactError(f"{member.name} is too large ({member.size} bytes)")
        return _Buffered(on_complete)

    def _read_version(self, raw: bytes) -> None:
        info = _object(_load_json(raw, "version file"), "version file")
        fmt = info.get("format")
        version = info.get("version")
        if fmt != "mender":
            raise ArtifactError(f"unsupported artifact format: {fmt!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version not in (2, 3):
            raise ArtifactError(f"unsupported artifact version: {version!r}")
        self._format = fmt
        self._version = version
        self._version_raw = raw
        self._stage = _ST_MANIFEST

    def _read_manifest(self, raw: bytes) -> None:
        self._manifest_data = self._add_checksums(raw, "manifest")
        self._verify("version", self._version_raw)
        self._stage = _ST_HEADERS

    def _read_augment_manifest(self, raw: bytes) -> None:
        self._augment_data = self._add_checksums(raw, "manifest-augment")

    def _add_checksums(self, raw: bytes, label: str) -> list[tuple[int, str]]:
        """Record every checksum line; returns the payload files, in manifest order."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"{label} is not valid UTF-8") from None
        data_files: list[tuple[int, str]] = []
        for line in text.split("\n"):
            if not line:
                continue
            checksum, sep, path = line.partition("  ")
            if not sep or not path or _SHA256_HEX.fullmatch(checksum) is None:
                raise ArtifactError(f"garbled line in {label}: {line[:200]!r}")
            if path in self._checksums:
                raise ArtifactError(f"{label} lists {path} twice")
            self._checksums[path] = _Checksum(expected=checksum.lower())
            if path.startswith("data/"):
                match = _PAYLOAD_PATH.fullmatch(path)
                if match is None:
                    raise ArtifactError(f"malformed {label} entry: {path}")
                data_files.append((int(match.group(1)), match.group(2)))
        return data_files

    def _expected(self, path: str) -> _Checksum:
        entry = self._checksums.get(path)
        if entry is None:
            raise ArtifactError(f"manifest does not list {path}")
        if entry.seen:
            raise ArtifactError(f"{path} appears twice in the artifact")
        return entry

    def _verify(self, path: str, raw: bytes) -> None:
        self.check_digest(path, self._expected(path), hashlib.sha256(raw).hexdigest())

    def check_digest(self, path: str, entry: _Checksum, actual: str) -> None:
        if actual != entry.expected:
            raise ArtifactError(f"invalid checksum for {path}")
        entry.seen = True

    # headers

    def _header(self, name: str, member: _Member, compression: str, *, augment: bool) -> _Buffered:
        entry = self._expected(name)
        if member.size > self._max_header_size:
            raise ArtifactError(
                f"{name} is too large ({member.size} bytes, at most {self._max_header_size})"
            )

        def complete(raw: bytes) -> None:
            # Verify first, so a damaged header is reported as such and not as bad JSON.
            self.check_digest(name, entry, hashlib.sha256(raw).hexdigest())
            files = _HeaderFiles(name, self._max_header_size)
            tar = _TarStream(files, name)
            decoder = _decoder(compression, files.count_then(tar.feed), name)
            decoder.feed(memoryview(raw))
            decoder.close()
            tar.close()
            if augment:
                self._read_augment_header(name, files.files)
            else:
                self._read_header(name, files.files)

        return _Buffered(complete)

    def _read_header(self, label: str, files: list[tuple[str, bytes]]) -> None:
        if not files or files[0][0] != "header-info":
            raise ArtifactError(f"{label} does not start with header-info")
        info = _object(_load_json(files[0][1], "header-info"), "header-info")
        if self._version == 3:
            self._read_header_info_v3(info)
        else:
            self._read_header_info_v2(info)
        seen: set[tuple[int, str]] = set()
        for path, raw in files[1:]:
            if path.startswith("scripts/"):
                continue
            index, rest = self._header_path(label, path)
            if (index, rest) in seen:
                raise ArtifactError(f"{label} contains {path} twice")
            seen.add((index, rest))
            payload = self._payloads[index]
            if rest == "type-info":
                payload.type_info = self._type_info(raw, path)
            elif rest == "meta-data":
                payload.meta_data = self._meta_data(raw, path)
            elif rest == "files" and self._version == 2:
                listed = _object(_load_json(raw, path), path).get("files")
                names = _string_list(listed, f"{path}: files")
                payload.files_list = [item.rsplit("/", 1)[-1] for item in names]
            elif not self._ignorable_header_file(rest):
                raise ArtifactError(f"{label}: unsupported file {path}")
        if self._version == 3:
            for index, payload in enumerate(self._payloads):
                if payload.type_info is None:
                    raise ArtifactError(f"{label}: missing headers/{index:04d}/type-info")
        for index, name in self._manifest_data:
            self._payload_for(index, name, "manifest").manifest_files.append(name)
        for payload in self._payloads:
            allowed = payload.files_list if self._version == 2 else payload.manifest_files
            payload.allowed_files.update(allowed or [])

    def _read_augment_header(self, label: str, files: list[tuple[str, bytes]]) -> None:
        if not files or files[0][0] != "header-info":
            raise ArtifactError(f"{label} does not start with header-info")
        info = _object(_load_json(files[0][1], f"{label}: header-info"), "header-info")
        payloads = info.get("payloads")
        if not isinstance(payloads, list):
            raise ArtifactError(f"{label}: header-info.payloads must be a list")
        if len(payloads) > len(self._payloads):
            raise ArtifactError(f"{label} describes more payloads than the header")
        for index, entry in enumerate(payloads):
            entry_obj = _object(entry, f"{label}: header-info.payloads[{index}]")
            self._payloads[index].augment_header_type = _optional_string(
                entry_obj.get("type"), f"{label}: header-info.payloads[{index}].type"
            )
        seen: set[tuple[int, str]] = set()
        for path, raw in files[1:]:
            index, rest = self._header_path(label, path)
            if (index, rest) in seen:
                raise ArtifactError(f"{label} contains {path} twice")
            seen.add((index, rest))
            payload = self._payloads[index]
            if rest == "type-info":
                payload.augment_type_info = self._type_info(raw, f"{label}: {path}")
            elif rest == "meta-data":
                payload.augment_meta_data = self._meta_data(raw, f"{label}: {path}")
            else:
                raise ArtifactError(f"{label}: unsupported file {path}")
        for index, name in self._augment_data:
            self._payload_for(index, name, "manifest-augment").augment_files.append(name)
            self._payloads[index].allowed_files.add(name)

    def _payload_for(self, index: int, name: str, label: str) -> _Payload:
        if index >= len(self._payloads):
            raise ArtifactError(f"{label} entry data/{index:04d}/{name} belongs to no payload")
        return self._payloads[index]

    def _header_path(self, label: str, path: str) -> tuple[int, str]:
        match = _HEADER_PATH.fullmatch(path)
        if match is None:
            raise ArtifactError(f"{label}: unexpected file {path}")
        index = int(match.group(1))
        if index >= len(self._payloads):
            raise ArtifactError(f"{label}: {path} does not belong to any payload")
        return index, match.group(2)

    @staticmethod
    def _ignorable_header_file(rest: str) -> bool:
        # Rootfs headers may carry these; Mender reads none of them.
        return rest.startswith(("signatures/", "scripts/", "checksums/"))

    def _read_header_info_v3(self, info: dict[str, Any]) -> None:
        payloads = info.get("payloads")
        if not isinstance(payloads, list):
            raise ArtifactError("header-info.payloads must be a list")
        for index, entry in enumerate(payloads):
            label = f"header-info.payloads[{index}]"
            payload_type = _optional_string(_object(entry, label).get("type"), f"{label}.type")
            self._payloads.append(_Payload(header_type=payload_type))
        provides = _object(info.get("artifact_provides"), "header-info.artifact_provides")
        name = provides.get("artifact_name")
        if not isinstance(name, str) or not name:
            raise ArtifactError("header-info: missing artifact_provides.artifact_name")
        group = _optional_string(
            provides.get("artifact_group"), "header-info.artifact_provides.artifact_group"
        )
        depends = _object(info.get("artifact_depends"), "header-info.artifact_depends")
        devices = _string_list(depends.get("device_type"), "header-info.device_type")
        if not devices:
            raise ArtifactError("header-info: missing artifact_depends.device_type")
        self._name = name
        self._device_types = devices
        # NOTE: Mender marshals the header structs, so only their known keys take part,
        # and the optional ones only when non-empty.
        self._header_provides = {"artifact_name": name}
        if group:
            self._header_provides["artifact_group"] = group
        depends_on_names = _optional_string_list(
            depends.get("artifact_name"), "header-info.artifact_depends.artifact_name"
        )
        depends_on_groups = _optional_string_list(
            depends.get("artifact_group"), "header-info.artifact_depends.artifact_group"
        )
        if depends_on_names:
            self._header_depends["artifact_name"] = depends_on_names
        self._header_depends["device_type"] = devices
        if depends_on_groups:
            self._header_depends["artifact_group"] = depends_on_groups

    def _read_header_info_v2(self, info: dict[str, Any]) -> None:
        updates = info.get("updates")
        if not isinstance(updates, list):
            raise ArtifactError("header-info.updates must be a list")
        for index, entry in enumerate(updates):
            label = f"header-info.updates[{index}]"
            payload_type = _optional_string(_object(entry, label).get("type"), f"{label}.type")
            self._payloads.append(_Payload(header_type=payload_type))
        name = info.get("artifact_name")
        if not isinstance(name, str) or not name:
            raise ArtifactError("header-info: missing artifact_name")
        devices = _string_list(
            info.get("device_types_compatible"), "header-info.device_types_compatible"
        )
        if not devices:
            raise ArtifactError("header-info: missing device_types_compatible")
        self._name = name
        self._device_types = devices

    def _type_info(self, raw: bytes, label: str) -> dict[str, Any]:
        info = _object(_load_json(raw, label), label)
        return {
            "type": _optional_string(info.get("type"), f"{label}: type"),
            "artifact_provides": _string_map(
                info.get("artifact_provides"), f"{label}: artifact_provides"
            ),
            "artifact_depends": _depends_map(
                info.get("artifact_depends"), f"{label}: artifact_depends"
            ),
            "clears_artifact_provides": (
                None
                if info.get("clears_artifact_provides") is None
                else _string_list(
                    info.get("clears_artifact_provides"), f"{label}: clears_artifact_provides"
                )
            ),
        }

    def _meta_data(self, raw: bytes, label: str) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        return _object(_load_json(raw, label), f"{label}: the top level")

    # data

    def expect_data_file(self, index: int, name: str, member_label: str) -> _Checksum:
        payload = self._payloads[index]
        if name not in payload.allowed_files:
            source = "header" if self._version == 2 else "manifest"
            raise ArtifactError(f"{member_label} contains {name}, which the {source} does not list")
        if _PAYLOAD_FILE_NAME.fullmatch(name) is None:
            raise ArtifactError(f"{member_label}: file name {name!r} has forbidden characters")
        return self._expected(f"data/{index:04d}/{name}")

    def received(self, index: int, name: str, file: _ReceivedFile) -> None:
        self._payloads[index].received[name] = file

    # result

    def result(self) -> ArtifactMeta:
        if self._stage != _ST_DATA:
            missing = {
                _ST_VERSION: "version file",
                _ST_MANIFEST: "manifest",
                _ST_HEADERS: "header",
                _ST_AUGMENT: "header-augment",
            }[self._stage]
            raise ArtifactError(f"artifact has no {missing}")
        missing_files = sorted(path for path, entry in self._checksums.items() if not entry.seen)
        if missing_files:
            raise ArtifactError(
                "manifest lists files missing from the artifact: " + ", ".join(missing_files)
            )
        updates: list[Update] = []
        provides = dict(self._header_provides)
        depends: dict[str, Any] = dict(self._header_depends)
        clears: list[str] = []
        for index, payload in enumerate(self._payloads):
            update, payload_provides, payload_depends, payload_clears = self._update(index, payload)
            updates.append(update)
            if self._version != 3:
                continue
            for key, value in payload_provides.items():
                if key in provides:
                    raise ArtifactError(f"conflicting keys in the artifact provides: {key}")
                provides[key] = value
            for key, value in payload_depends.items():
                if key in depends:
                    raise ArtifactError(f"conflicting keys in the artifact depends: {key}")
                depends[key] = value
            clears.extend(payload_clears)
        if self._version != 3:
            # NOTE: Mender merges provides and depends for version 3 only, then always
            # records the compatible device types as a dependency.
            depends = {"device_type": list(self._device_types)}
        return ArtifactMeta(
            format=self._format,
            version=self._version,
            name=self._name,
            device_types_compatible=list(self._device_types),
            signed=self._signed,
            provides=provides,
            depends=depends,
            clears_provides=clears,
            updates=updates,
        )

    def _update(
        self, index: int, payload: _Payload
    ) -> tuple[Update, dict[str, str], dict[str, Any], list[str]]:
        info = payload.type_info or {}
        augment = payload.augment_type_info or {}
        # The payload type comes from type-info (the augmented one first), falling back to
        # header-info, whose type rootfs-image artifacts leave empty in type-info.
        candidates = (
            augment.get("type"),
            payload.augment_header_type,
            info.get("type"),
            payload.header_type,
        )
        payload_type = next((item for item in candidates if item), payload.header_type)
        provides: dict[str, str] = dict(info.get("artifact_provides") or {})
        provides.update(augment.get("artifact_provides") or {})
        depends = _merge_json(
            info.get("artifact_depends") or {},
            augment.get("artifact_depends") or {},
            "artifact_depends",
        )
        clears = augment.get("clears_artifact_provides")
        if clears is None:
            clears = info.get("clears_artifact_provides") or []
        try:
            meta_data = _merge_json(
                payload.meta_data or {}, payload.augment_meta_data or {}, "meta-data"
            )
        except RecursionError:
            raise ArtifactError(f"headers/{index:04d}/meta-data is nested too deeply") from None
        # NOTE: Mender stores only the original payload files, not the augmented ones
        # (which are still verified above).
        names = payload.files_list if self._version == 2 else payload.manifest_files
        files = []
        for name in names or []:
            received = payload.received.get(name)
            if received is None:
                raise ArtifactError(f"data/{index:04d}/{name} is missing from the artifact")
            files.append(
                UpdateFile(
                    name=name, checksum=received.checksum, size=received.size, date=received.date
                )
            )
        update = Update(type=payload_type, files=files, meta_data=[meta_data] if meta_data else [])
        return update, provides, depends, list(clears)


def _describe(member: _Member) -> str:
    if member.kind == "dir":
        return "directory"
    if member.typeflag in ("1", "2"):
        return "link"
    return f"tar entry of type {member.typeflag!r}"


class _HeaderFiles:
    """Collects the (small) files of a header tar, within the header size cap."""

    def __init__(self, label: str, limit: int) -> None:
        self._label = label
        self._limit = limit
        self._total = 0
        self.files: list[tuple[str, bytes]] = []
        self._name = ""
        self._buffer = bytearray()
        self._keep = False

    def count_then(self, feed: _Output) -> _Output:
        def counted(chunk: memoryview) -> None:
            self._total += len(chunk)
            if self._total > self._limit:
                raise self._too_large()
            feed(chunk)

        return counted

    def _too_large(self) -> ArtifactError:
        return ArtifactError(f"{self._label} is too large (over {self._limit} bytes uncompressed)")

    def begin(self, member: _Member) -> None:
        if member.kind == "dir":
            # mender-artifact writes no directories, but other tar writers do.
            self._keep = False
            return
        if member.kind != "file":
            raise ArtifactError(f"{self._label}: unexpected {_describe(member)} {member.name}")
        if member.size > self._limit:
            raise self._too_large()
        self._name = member.name
        self._keep = not member.name.startswith("scripts/")
        self._buffer = bytearray()
        if not self._keep:
            self.files.append((member.name, b""))

    def data(self, chunk: memoryview) -> None:
        if self._keep:
            self._buffer += chunk

    def end(self) -> None:
        if self._keep:
            self.files.append((self._name, bytes(self._buffer)))
            self._buffer = bytearray()
            self._keep = False


class _PayloadMember:
    """Streams one `data/NNNN.tar*` member: decompress, split into files, hash each file."""

    def __init__(self, reader: _ArtifactReader, index: int, label: str, compression: str) -> None:
        files = _PayloadFiles(reader, index, label)
        self._tar = _TarStream(files, label)
        self._decoder = _decoder(compression, self._tar.feed, label)

    def data(self, chunk: memoryview) -> None:
        self._decoder.feed(chunk)

    def end(self) -> None:
        self._decoder.close()
        self._tar.close()


class _PayloadFiles:
    """The files inside one payload tar, each hashed as it streams past."""

    def __init__(self, reader: _ArtifactReader, index: int, label: str) -> None:
        self._reader = reader
        self._index = index
        self._label = label
        self._names: set[str] = set()
        self._name = ""
        self._entry: _Checksum | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._mtime = 0.0

    def begin(self, member: _Member) -> None:
        if member.kind != "file":
            raise ArtifactError(f"{self._label}: unexpected {_describe(member)} {member.name}")
        name = member.name
        if name in self._names:
            raise ArtifactError(f"{self._label} contains {name} twice")
        self._names.add(name)
        self._entry = self._reader.expect_data_file(self._index, name, self._label)
        self._name = name
        self._hash = hashlib.sha256()
        self._size = member.size
        self._mtime = member.mtime

    def data(self, chunk: memoryview) -> None:
        self._hash.update(chunk)

    def end(self) -> None:
        assert self._entry is not None
        path = f"data/{self._index:04d}/{self._name}"
        checksum = self._hash.hexdigest()
        self._reader.check_digest(path, self._entry, checksum)
        try:
            date = datetime.fromtimestamp(self._mtime, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ArtifactError(f"{path}: modification time out of range") from None
        self._reader.received(
            self._index, self._name, _ReceivedFile(checksum=checksum, size=self._size, date=date)
        )
        self._entry = None
