"""The wire format of device and user websockets: msgpack `ProtoMsg` frames.

A frame is a msgpack map `{"hdr": {"proto", "typ", "sid", "props"}, "body": bin}`; empty
fields are left out. Integers in `props` are always written as int64: mender-connect refuses
file-transfer offsets in any other encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import msgpack

__all__ = [
    "CONTROL",
    "FILE_TRANSFER",
    "KNOWN_TYPES",
    "MENDER_CLIENT",
    "PORT_FORWARD",
    "SHELL",
    "STATUS_ERROR",
    "STATUS_NORMAL",
    "Frame",
    "MalformedFrame",
    "decode",
    "encode",
    "pack_body",
    "unpack_body",
    "wind_down",
]

SHELL: Final = 1
FILE_TRANSFER: Final = 2
PORT_FORWARD: Final = 3
MENDER_CLIENT: Final = 4
CONTROL: Final = 0xFFFF

# `props.status` of shell replies.
STATUS_NORMAL: Final = 1
STATUS_ERROR: Final = 2

# The message types of each protocol, as mender-connect and mender-cli speak them.
KNOWN_TYPES: Final[Mapping[int, frozenset[str]]] = {
    SHELL: frozenset({"new", "shell", "resize", "ping", "pong", "stop"}),
    FILE_TRANSFER: frozenset(
        {"stat", "file_info", "get_file", "put_file", "file_chunk", "ack", "error"}
    ),
    PORT_FORWARD: frozenset({"new", "stop", "forward", "ack", "error"}),
    MENDER_CLIENT: frozenset({"check-update", "send-inventory"}),
    CONTROL: frozenset({"ping", "pong", "open", "accept", "close", "error"}),
}

_INT64: Final = struct.Struct(">q")
_UINT64: Final = struct.Struct(">Q")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class MalformedFrame(ValueError):
    """The bytes are not a ProtoMsg frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One ProtoMsg: header fields and the raw body."""

    proto: int
    typ: str = ""
    sid: str = ""
    props: Mapping[str, Any] = field(default_factory=dict)
    body: bytes = b""

    def with_session(self, sid: str, **props: Any) -> Frame:
        """The same frame for session `sid`, with extra properties set."""
        return replace(self, sid=sid, props={**self.props, **props} if props else self.props)


def decode(data: bytes) -> Frame:
    """Parse one frame; raise `MalformedFrame` when it is not one."""
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedFrame(f"not a msgpack message: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("hdr"), dict):
        raise MalformedFrame("the message has no header")
    hdr = message["hdr"]
    proto = hdr.get("proto")
    if isinstance(proto, bool) or not isinstance(proto, int) or not 0 <= proto <= 0xFFFF:
        raise MalformedFrame("the header has no valid protocol")
    typ = hdr.get("typ") or ""
    sid = hdr.get("sid") or ""
    props = hdr.get("props") or {}
    if not isinstance(typ, str) or not isinstance(sid, str):
        raise MalformedFrame("the message type and session id must be strings")
    if not isinstance(props, dict) or not all(isinstance(k, str) for k in props):
        raise MalformedFrame("the properties must be a map with string keys")
    body = message.get("body") or b""
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes):
        raise MalformedFrame("the body must be binary")
    return Frame(proto=proto, typ=typ, sid=sid, props=props, body=body)


def _pack(value: Any, out: bytearray) -> None:
    if isinstance(value, bool) or value is None:
        out += msgpack.packb(value)
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            out += b"\xd3" + _INT64.pack(value)
        else:
            out += b"\xcf" + _UINT64.pack(value)
    elif isinstance(value, Mapping):
        out += _map_header(len(value))
        for key, item in value.items():
            _pack(key, out)
            _pack(item, out)
    elif isinstance(value, list | tuple):
        count = len(value)
        out += bytes([0x90 | count]) if count < 16 else b"\xdd" + struct.pack(">I", count)
        for item in value:
            _pack(item, out)
    else:
        out += msgpack.packb(value, use_bin_type=True)


def _map_header(count: int) -> bytes:
    return bytes([0x80 | count]) if count < 16 else b"\xdf" + struct.pack(">I", count)


def encode(frame: Frame) -> bytes:
    """Serialise a frame (int properties as int64, empty fields left out)."""
    hdr: dict[str, Any] = {"proto": frame.proto}
    if frame.typ:
        hdr["typ"] = frame.typ
    if frame.sid:
        hdr["sid"] = frame.sid
    out = bytearray(_map_header(2 if frame.body else 1))
    out += msgpack.packb("hdr")
    out += _map_header(len(hdr) + (1 if frame.props else 0))
    for key, value in hdr.items():
        out += msgpack.packb(key)
        # The protocol number is a plain unsigned integer, as the Go peers write it.
        out += msgpack.packb(value)
    if frame.props:
        out += msgpack.packb("props")
        _pack(frame.props, out)
    if frame.body:
        out += msgpack.packb("body")
        out += msgpack.packb(frame.body, use_bin_type=True)
    return bytes(out)


def wind_down(sid: str, reason: str, *, user_id: str = "") -> list[bytes]:
    """The frames that end a session on the device: stop its shell, close the rest."""
    props: dict[str, Any] = {"status": STATUS_ERROR}
    if user_id:
        props["user_id"] = user_id
    return [
        encode(Frame(SHELL, "stop", sid, props, reason.encode())),
        encode(Frame(CONTROL, "close", sid)),
    ]


def pack_body(value: Mapping[str, Any]) -> bytes:
    """A structured body (control and file-transfer messages), int64 integers included."""
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def unpack_body(body: bytes) -> dict[str, Any]:
    """Parse a structured body; raise `MalformedFrame` when it is not a map."""
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=False, timestamp=3)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedFrame(f"malformed message body: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedFrame("malformed message body: not a map")
    return value
