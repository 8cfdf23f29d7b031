"""Incremental `multipart/form-data` reading for uploads that must never sit in memory.

Small form fields come first and are collected (each under a size cap); the file part, which
must come after them, is then handed out chunk by chunk as the body arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Final

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from common.core.errors import BadRequest

__all__ = ["FIELD_LIMIT", "MultipartStream"]

# Non-file form fields are at most 1 MiB each (Mender's MaxFormParamSize).
FIELD_LIMIT: Final = 1024 * 1024
_MAX_FIELDS: Final = 64
_MULTIPART_TYPES: Final = frozenset({b"multipart/form-data", b"multipart/mixed"})

_Event = tuple[str, bytes]


class MultipartStream:
    """Reads one multipart request body: `fields_until(name)` then `file_chunks()`."""

    def __init__(self, request: Request, *, field_limit: int = FIELD_LIMIT) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if content_type not in _MULTIPART_TYPES or not boundary:
            raise BadRequest("request Content-Type isn't multipart/form-data")
        self._body = request.stream().__aiter__()
        self._events: deque[_Event] = deque()
        self._field_limit = field_limit
        self._ended = False
        self._body_done = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": lambda: self._events.append(("begin", b"")),
                "on_header_field": lambda d, s, e: self._events.append(("hname", bytes(d[s:e]))),
                "on_header_value": lambda d, s, e: self._events.append(("hvalue", bytes(d[s:e]))),
                "on_header_end": lambda: self._events.append(("hend", b"")),
                "on_headers_finished": lambda: self._events.append(("headers", b"")),
                "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
                "on_part_end": lambda: self._events.append(("end", b"")),
                "on_end": lambda: self._events.append(("finish", b"")),
            },
        )
        self.filename = ""

    async def _next(self) -> _Event | None:
        while not self._events:
            if self._body_done:
                return None
            try:
                chunk = await self._body.__anext__()
            except StopAsyncIteration:
                self._body_done = True
                continue
            if chunk:
                try:
                    self._parser.write(chunk)
                except MultipartParseError as exc:
                    raise BadRequest(f"malformed multipart body: {exc}") from None
        return self._events.popleft()

    async def _part_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        name = value = b""
        while (event := await self._next()) is not None:
            kind, data = event
            if kind == "hname":
                name += data
            elif kind == "hvalue":
                value += data
            elif kind == "hend":
                headers[name.decode("latin-1").lower()] = value.decode("latin-1")
                name = value = b""
            elif kind == "headers":
                return headers
        raise BadRequest("unexpected EOF in the multipart body")

    async def fields_until(self, file_field: str, *, missing: str) -> dict[str, str]:
        """Collect the fields that precede the file part; stop at its first byte.

        `missing` is the error when the body ends without the file part.
        """
        fields: dict[str, str] = {}
        while (event := await self._next()) is not None:
            kind, _ = event
            if kind == "finish":
                break
            if kind != "begin":
                continue
            headers = await self._part_headers()
            _, options = parse_options_header(headers.get("content-disposition", ""))
            name = options.get(b"name", b"").decode("utf-8", "replace").lower()
            if name == file_field:
                self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
                return fields
            value = await self._field_value(name)
            if len(fields) >= _MAX_FIELDS:
                raise BadRequest("too many form fields")
            fields[name] = value
        raise BadRequest(missing)

    async def _field_value(self, name: str) -> str:
        value = bytearray()
        while (event := await self._next()) is not None:
            kind, data = event
            if kind == "data":
                value += data
                if len(value) > self._field_limit:
                    raise BadRequest(f"failed to read form value '{name}': too large")
            elif kind == "end":
                try:
                    return value.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest(f"form value '{name}' is not valid UTF-8") from None
        raise BadRequest("unexpected EOF in the multipart body")

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes as they arrive; the rest of the body is then drained.

        Raises `BadRequest` when the body ends before the file part does (truncated upload).
        """
        while (event := await self._next()) is not None:
            kind, data = event
            if kind == "data":
                if data:
                    yield data
            elif kind == "end":
                break
        else:
            raise BadRequest("unexpected EOF: the upload ended before the file was complete")
        while (event := await self._next()) is not None:
            if event[0] == "finish":
                self._ended = True
        if not self._ended:
            raise BadRequest("unexpected EOF: the multipart body is not terminated")
