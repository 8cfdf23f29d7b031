"""Streaming decoders for the compressions of an artifact's inner tars: none, gzip and xz.

Each decoder is pushed the compressed bytes and passes on at most 64 KiB of output per step,
so a small input that expands enormously never sits in memory. The xz decoder may use at
most 96 MiB (`xz -9` needs 65 MiB); zstd is refused plainly.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from typing import Final, Protocol

from services.deployments.artifact.errors import ArtifactError

__all__ = ["Decoder", "Output", "decoder_for"]

Output = Callable[[memoryview], None]

_DECOMPRESS_CHUNK: Final = 64 * 1024  # most decompressed bytes produced per step
# xz streams made with `xz -9` need 65 MiB to decode; larger dictionaries are refused.
_XZ_MEMORY_LIMIT: Final = 96 * 1024 * 1024


class Decoder(Protocol):
    """Decompresses a stream pushed in pieces, handing the output on as it comes."""

    def feed(self, data: memoryview) -> None:
        """Decode the next piece of the compressed stream."""

    def close(self) -> None:
        """Check that the compressed stream was complete."""


def decoder_for(suffix: str, out: Output, label: str) -> Decoder:
    """The decoder for a member named `*.tar<suffix>`: "", ".gz" or ".xz"; ".zst" is refused."""
    if suffix == ".gz":
        return _Gzip(out, label)
    if suffix == ".xz":
        return _Xz(out, label)
    if suffix == ".zst":
        raise ArtifactError(f"{label}: zstd compression is not supported by this server")
    if suffix:
        raise ValueError(f"unknown compression suffix {suffix!r}")
    return _Plain(out)


class _Plain:
    def __init__(self, out: Output) -> None:
        self._out = out

    def feed(self, data: memoryview) -> None:
        self._out(data)

    def close(self) -> None:
        pass


class _Gzip:
    """Gzip, including concatenated members (Go's reader accepts them too)."""

    def __init__(self, out: Output, label: str) -> None:
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
    """Xz, including concatenated streams and the zero padding allowed between them."""

    def __init__(self, out: Output, label: str) -> None:
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
