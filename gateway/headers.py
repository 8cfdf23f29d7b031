"""Header handling shared by the HTTP and websocket proxies.

One pass over the client's headers collects what the gateway needs (request id, credentials,
body framing) and the headers to forward; hop-by-hop headers, anything the client could use
to impersonate the gateway (`X-Forwarded-*`, `X-MEN-RBAC-*`, the request id) are dropped and
re-created by the gateway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from gateway._types import Scope

__all__ = [
    "HOP_BY_HOP",
    "REQUEST_ID",
    "RequestHeaders",
    "bearer_token",
    "cookie_token",
    "forwarded_headers",
    "new_request_id",
    "parse_request_headers",
]

REQUEST_ID: Final = b"x-men-requestid"
REQUEST_ID_NAME: Final = "X-MEN-RequestID"
_MAX_REQUEST_ID: Final = 128

# RFC 9110 §7.6.1 connection-specific headers, plus the proxy ones.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Client headers the gateway never forwards: it sets these itself (`expect` is answered by
# the gateway's own server before the body is read).
_REPLACED: Final = frozenset(
    {
        REQUEST_ID,
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-uri",
        b"x-forwarded-method",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"forwarded",
        b"expect",
    }
)
_RBAC_PREFIX: Final = b"x-men-rbac-"
# The websocket handshake is redone by the upstream connection.
_WS_HANDSHAKE: Final = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"content-length",
    }
)


@dataclass(slots=True)
class RequestHeaders:
    """What the gateway reads from a request's headers, and what it forwards."""

    request_id: str
    authorization: str
    cookie: str
    host: str
    content_length: str | None
    chunked: bool
    # Client headers to pass upstream, names and values decoded as latin-1.
    forward: list[tuple[str, str]]


def new_request_id() -> str:
    """A random (version 4) UUID, formatted as usual, for requests that bring no id."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _valid_request_id(value: bytes) -> str | None:
    text = value.decode("latin-1").strip()
    if text and len(text) <= _MAX_REQUEST_ID and text.isprintable():
        return text
    return None


def parse_request_headers(scope: Scope, *, websocket: bool = False) -> RequestHeaders:
    """Read the request id, credentials and body framing; collect the forwardable headers."""
    request_id: str | None = None
    authorization = cookie = host = ""
    content_length: str | None = None
    chunked = False
    connection_tokens: list[bytes] = []
    forward: list[tuple[str, str]] = []
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.lower()
        if name in HOP_BY_HOP:
            if name == b"transfer-encoding":
                chunked = b"chunked" in raw_value.lower()
            elif name == b"connection":
                connection_tokens.extend(t.strip() for t in raw_value.lower().split(b","))
            continue
        if name in _REPLACED or name.startswith(_RBAC_PREFIX):
            if name == REQUEST_ID and request_id is None:
                request_id = _valid_request_id(raw_value)
            continue
        if websocket and name in _WS_HANDSHAKE:
            if name == b"host":
                host = raw_value.decode("latin-1")
            continue
        value = raw_value.decode("latin-1")
        if name == b"authorization":
            authorization = value
        elif name == b"cookie":
            cookie = value if not cookie else f"{cookie}; {value}"
        elif name == b"host":
            host = value
        elif name == b"content-length":
            content_length = value.strip()
        forward.append((name.decode("latin-1"), value))
    extra = {t for t in connection_tokens if t and t not in (b"close", b"keep-alive", b"upgrade")}
    if extra:
        forward = [(n, v) for n, v in forward if n.encode("latin-1") not in extra]
    return RequestHeaders(
        request_id=request_id or new_request_id(),
        authorization=authorization,
        cookie=cookie,
        host=host,
        content_length=content_length,
        chunked=chunked,
        forward=forward,
    )


def bearer_token(authorization: str) -> str:
    """The token of a `Bearer` Authorization header, or an empty string."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def cookie_token(cookie: str) -> str:
    """The value of the `JWT` cookie the Mender web UI sets, or an empty string."""
    for part in cookie.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == "JWT":
            return value.strip().strip('"')
    return ""


def forwarded_headers(scope: Scope, host: str, request_id: str) -> list[tuple[str, str]]:
    """The `X-Forwarded-*` and request id headers describing the client's request."""
    client = scope.get("client")
    scheme = scope.get("scheme", "http")
    if scheme == "ws":
        scheme = "http"
    elif scheme == "wss":
        scheme = "https"
    raw_path: bytes | None = scope.get("raw_path")
    uri = raw_path.decode("latin-1") if raw_path else scope["path"]
    query: bytes = scope.get("query_string", b"")
    if query:
        uri = f"{uri}?{query.decode('latin-1')}"
    headers = [
        ("X-Forwarded-Proto", scheme),
        ("X-Forwarded-Uri", uri),
        (REQUEST_ID_NAME, request_id),
    ]
    if host:
        headers.append(("X-Forwarded-Host", host))
    if client:
        headers.append(("X-Forwarded-For", client[0]))
    return headers
