"""Header handling shared by the HTTP and websocket proxies.

One pass over the client's headers collects what the gateway needs (request id, credentials,
body framing) and the headers to forward; hop-by-hop headers, anything the client could use
to impersonate the gateway (`X-Forwarded-*`, `X-MEN-RBAC-*`, the request id) are dropped and
re-created by the gateway. A trusted proxy's `X-Forwarded-Proto`, `-Host` and `-For` say how
the client reached it (`Origin`); anyone else's are ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final

from gateway._types import Scope

__all__ = [
    "HOP_BY_HOP",
    "REQUEST_ID",
    "Origin",
    "RequestHeaders",
    "TrustedProxies",
    "bearer_token",
    "cookie_token",
    "forwarded_headers",
    "new_request_id",
    "origin",
    "parse_request_headers",
    "request_target",
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
# `Connection` tokens that name no other header.
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})
# What a trusted proxy may say about the client's request.
_PROXY_PROTO: Final = b"x-forwarded-proto"
_PROXY_HOST: Final = b"x-forwarded-host"
_PROXY_FOR: Final = b"x-forwarded-for"
# A host name, IPv4 or bracketed IPv6 address, with an optional port: nothing that could
# break out of a URL built from it.
_HOST: Final = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
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
    # The `X-Forwarded-*` the client sent: believed only from a trusted proxy.
    proxy_proto: str = ""
    proxy_host: str = ""
    proxy_for: str = ""


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


# What `parse_request_headers` does with a header, by its lower-cased name: one dict lookup
# per header; a name not listed is forwarded as it is (unless it is an `X-MEN-RBAC-*`).
_FORWARD: Final = 0
_DROP: Final = 1
_CHUNKED: Final = 2
_CONNECTION: Final = 3
_REQUEST_ID: Final = 4
_PROXIED: Final = 5
_AUTHORIZATION: Final = 6
_COOKIE: Final = 7
_HOST_NAME: Final = 8
_CONTENT_LENGTH: Final = 9
_HOST_UNFORWARDED: Final = 10
_ROLES: Final[dict[bytes, int]] = {
    **dict.fromkeys(HOP_BY_HOP, _DROP),
    **dict.fromkeys(_REPLACED, _DROP),
    b"transfer-encoding": _CHUNKED,
    b"connection": _CONNECTION,
    REQUEST_ID: _REQUEST_ID,
    _PROXY_PROTO: _PROXIED,
    _PROXY_HOST: _PROXIED,
    _PROXY_FOR: _PROXIED,
    b"authorization": _AUTHORIZATION,
    b"cookie": _COOKIE,
    b"host": _HOST_NAME,
    b"content-length": _CONTENT_LENGTH,
}
# A websocket's handshake headers are not forwarded (its host is still read).
_WS_ROLES: Final[dict[bytes, int]] = {
    **_ROLES,
    **dict.fromkeys(_WS_HANDSHAKE, _DROP),
    b"host": _HOST_UNFORWARDED,
}


def parse_request_headers(scope: Scope, *, websocket: bool = False) -> RequestHeaders:
    """Read the request id, credentials and body framing; collect the forwardable headers."""
    request_id: str | None = None
    authorization = cookie = host = ""
    content_length: str | None = None
    chunked = False
    connection_tokens: list[bytes] = []
    forward: list[tuple[str, str]] = []
    proxied: dict[bytes, str] = {}
    roles = _WS_ROLES if websocket else _ROLES
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.lower()
        role = roles.get(name, _FORWARD)
        if role == _FORWARD:
            if not name.startswith(_RBAC_PREFIX):
                forward.append((name.decode("latin-1"), raw_value.decode("latin-1")))
            continue
        if role == _DROP:
            continue
        if role == _CHUNKED:
            chunked = b"chunked" in raw_value.lower()
            continue
        if role == _CONNECTION:
            connection_tokens.extend(t.strip() for t in raw_value.lower().split(b","))
            continue
        if role == _REQUEST_ID:
            if request_id is None:
                request_id = _valid_request_id(raw_value)
            continue
        value = raw_value.decode("latin-1")
        if role == _PROXIED:
            proxied[name] = f"{proxied[name]},{value}" if name in proxied else value
            continue
        if role == _AUTHORIZATION:
            authorization = value
        elif role == _COOKIE:
            cookie = value if not cookie else f"{cookie}; {value}"
        elif role == _CONTENT_LENGTH:
            content_length = value.strip()
        elif role == _HOST_NAME:
            host = value
        else:  # _HOST_UNFORWARDED
            host = value
            continue
        forward.append((name.decode("latin-1"), value))
    if connection_tokens:
        extra = {t for t in connection_tokens if t and t not in _CONNECTION_OPTIONS}
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
        proxy_proto=proxied.get(_PROXY_PROTO, ""),
        proxy_host=proxied.get(_PROXY_HOST, ""),
        proxy_for=proxied.get(_PROXY_FOR, ""),
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


class TrustedProxies:
    """The addresses whose `X-Forwarded-*` headers the gateway believes."""

    def __init__(self, networks: Sequence[IPv4Network | IPv6Network]) -> None:
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        """Whether `address` (an IP address as text) is a trusted proxy's."""
        if not self._networks:
            return False
        try:
            ip = ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)


@dataclass(frozen=True, slots=True)
class Origin:
    """How the client reached Fleetport: the scheme and host it used, and its address."""

    scheme: str
    host: str
    # The client's address (rate limits), and the `X-Forwarded-For` chain to pass on.
    client: str
    chain: str

    def url(self, path: str) -> str:
        """An absolute URL of `path` as the client addresses this server."""
        return f"{self.scheme}://{self.host}{path}"


def origin(scope: Scope, req: RequestHeaders, trusted: TrustedProxies) -> Origin:
    """Where the request comes from; a trusted proxy's forwarded headers describe its client."""
    client = scope.get("client")
    peer = client[0] if client else ""
    scheme = _SCHEMES.get(scope.get("scheme", "http"), "http")
    if not trusted.trusts(peer):
        return Origin(scheme, req.host, peer, peer)
    proto = req.proxy_proto.split(",")[0].strip().lower()
    host = req.proxy_host.split(",")[0].strip()
    hops = [h.strip() for h in req.proxy_for.split(",") if h.strip()]
    # The nearest address that is not a trusted proxy's is the client (a client can write
    # anything to the left of it).
    address = peer
    for hop in reversed(hops):
        address = hop
        if not trusted.trusts(hop):
            break
    return Origin(
        scheme=_SCHEMES.get(proto, scheme),
        host=host if _HOST.fullmatch(host) else req.host,
        client=address,
        chain=", ".join([*hops, peer]),
    )


def request_target(scope: Scope) -> str:
    """The path and query of the request exactly as the client sent them."""
    raw_path: bytes | None = scope.get("raw_path")
    target = raw_path.decode("latin-1") if raw_path else scope["path"]
    query: bytes = scope.get("query_string", b"")
    if query:
        return f"{target}?{query.decode('latin-1')}"
    return target


def forwarded_headers(target: str, client: Origin, request_id: str) -> list[tuple[str, str]]:
    """The `X-Forwarded-*` and request id headers describing the client's request.

    `target` is the request's path and query as sent (`request_target`).
    """
    headers = [
        ("X-Forwarded-Proto", client.scheme),
        ("X-Forwarded-Uri", target),
        (REQUEST_ID_NAME, request_id),
    ]
    if client.host:
        headers.append(("X-Forwarded-Host", client.host))
    if client.chain:
        headers.append(("X-Forwarded-For", client.chain))
    return headers
