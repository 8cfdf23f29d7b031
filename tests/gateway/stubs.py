"""Upstreams for the gateway tests: small raw ASGI apps served by real uvicorn servers.

`StubService` plays any Fleetport service: it describes every HTTP request it gets (so a
test sees exactly what the gateway forwarded), serves byte ranges of a deterministic blob,
echoes websockets, and, as deviceauth or useradm, publishes the keys and revocations an
`IssuerControl` holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from common.core.revocations import REVOCATIONS_HEADER
from common.core.tokens import SigningKey, public_jwk
from gateway._types import Receive, Scope, Send
from tests.toolkit import eventually

DEVICE_FEED = "/api/internal/v1/devauth/tokens/revocations"
USER_FEED = "/api/internal/v1/useradm/tokens/revocations"
_ISSUER_PREFIXES = {"deviceauth": "/api/internal/v1/devauth", "useradm": "/api/internal/v1/useradm"}
_PATTERN = bytes(range(256)) * 4096  # 1 MiB


def blob(start: int, end: int) -> bytes:
    """Bytes [start, end) of the deterministic blob the stubs serve."""
    out = bytearray()
    pos = start
    while pos < end:
        offset = pos % len(_PATTERN)
        take = min(end - pos, len(_PATTERN) - offset)
        out += _PATTERN[offset : offset + take]
        pos += take
    return bytes(out)


# The stub issuers' keys: device tokens RS256 without a key id (as deviceauth signs them),
# user tokens EdDSA with key id 0 (as useradm signs with an Ed25519 `private.id.0.pem`).
DEVICE_KEY = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
USER_KEY = SigningKey(ed25519.Ed25519PrivateKey.generate(), kid=0)


def claims_of(token: str) -> dict[str, Any]:
    """A token's claims, unverified."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def make_token(
    *,
    exp: float | None = None,
    sub: str | None = None,
    device: bool = True,
    extra: dict[str, Any] | None = None,
    key: SigningKey | None = None,
) -> str:
    """A token signed as its issuer signs them (or with `key`), valid for an hour."""
    # A fresh subject and id each time, so no two tests share a token.
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub or str(uuid.uuid4()), "jti": str(uuid.uuid4()), "iat": now}
    claims["exp"] = now + 3600 if exp is None else exp
    if device:
        claims.update({"iss": "Mender", "mender.device": True})
    else:
        claims.update({"iss": "mender.useradm", "scp": "mender.*", "mender.user": True})
    claims.update(extra or {})
    return (key or (DEVICE_KEY if device else USER_KEY)).sign(claims)


@dataclass
class IssuerControl:
    """What the deviceauth and useradm stubs publish: keys and revocations; what was read."""

    keys: dict[str, list[SigningKey]] = field(default_factory=dict)
    revocations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    # The token uses the gateways reported, per issuer.
    used: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # While set, the issuer endpoints answer this status (an issuer in trouble).
    failing: int | None = None
    # Set when something is revoked (ends the long polls waiting for it).
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        """The usual keys, nothing read; revocations stay (the gateways already hold them)."""
        self.keys = {"deviceauth": [DEVICE_KEY], "useradm": [USER_KEY]}
        self.reads.clear()
        self.failing = None

    def revoke(self, issuer: str, key: str, *, not_before: int | None = None) -> int:
        """Record a revocation as an issuer does; return its sequence number."""
        entries = self.revocations.setdefault(issuer, [])
        seq = len(entries) + 1
        when = int(time.time()) + 1 if not_before is None else not_before
        entries.append({"seq": seq, "key": key, "not_before": when, "expires": 2**40})
        self.changed.set()
        self.changed = asyncio.Event()
        return seq

    def asked(self) -> list[str]:
        """The reads other than the feed's long polls (a gateway renews those on its own)."""
        return [path for path in self.reads if path != "revocations"]

    def reads_of(self, suffix: str) -> list[str]:
        """The recorded reads of issuer paths ending in `suffix`."""
        return [path for path in self.reads if path.endswith(suffix)]


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to a server (one `Connection: close` request); parse its answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read(-1)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _headers_dict(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1")
        out[name] = f"{out[name]}, {value.decode('latin-1')}" if name in out else value.decode()
    return out


@dataclass
class StubService:
    """A stand-in for one upstream service."""

    name: str
    issuers: IssuerControl
    ws_log: list[dict[str, Any]] = field(default_factory=list)
    # Paths of requests as they arrive, once their body is complete, and of downloads cut short.
    started: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    aborted_downloads: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        path: str = scope["path"]
        query = parse_qs(scope["query_string"].decode())
        prefix = _ISSUER_PREFIXES.get(self.name)
        if prefix is not None and path.startswith(f"{prefix}/tokens/"):
            await self._issuer(path.removeprefix(f"{prefix}/tokens/"), query, receive, send)
        elif path.endswith("/blob"):
            await self._blob(scope, receive, send, int(query.get("size", ["1048576"])[0]))
        elif path.endswith("/chunked"):
            await self._chunked(send, int(query.get("parts", ["4"])[0]))
        elif path.endswith("/slow"):
            await asyncio.sleep(float(query.get("seconds", ["5"])[0]))
            await self._json(send, 200, {"slow": True})
        elif path.endswith("/broken"):
            await self._broken(send)
        elif path.endswith("/hop"):
            await self._hop(send)
        elif path.endswith("/gzip"):
            body = gzip.compress(b'{"compressed": true}' * 100)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-encoding", b"gzip"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif path.endswith("/early"):
            # Refuses before reading the body, as a size check on Content-Length does.
            await self._json(send, 413, {"error": "too large", "request_id": ""})
        else:
            await self._describe(scope, receive, send, query)

    @staticmethod
    async def _json(
        send: Send, status: int, doc: object, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        body = json.dumps(doc).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send(
            {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
        )
        await send({"type": "http.response.body", "body": body})

    async def _issuer(
        self, what: str, query: dict[str, list[str]], receive: Receive, send: Send
    ) -> None:
        if what == "used":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            self.issuers.used.setdefault(self.name, []).extend(json.loads(body)["tokens"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.issuers.reads.append(what)
        if self.issuers.failing is not None:
            await self._json(send, self.issuers.failing, {"error": "failing", "request_id": ""})
        elif what == "keys":
            keys = [public_jwk(k.verifying()) for k in self.issuers.keys[self.name]]
            await self._json(send, 200, {"keys": keys})
        elif what == "revocations":
            after = int(query.get("after", ["0"])[0])
            wait = float(query.get("wait", ["0"])[0])
            entries = self.issuers.revocations.setdefault(self.name, [])
            # A long poll: held until something is revoked.
            deadline = time.monotonic() + wait
            while len(entries) <= after and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(deadline - time.monotonic()):
                        await self.issuers.changed.wait()
            await self._json(send, 200, {"revocations": entries[after:], "more": False})
        else:
            await self._json(send, 404, {"error": "not found", "request_id": ""})

    async def _describe(
        self, scope: Scope, receive: Receive, send: Send, query: dict[str, list[str]]
    ) -> None:
        self.started.append(scope["path"])
        digest = hashlib.sha256()
        length = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            digest.update(chunk)
            length += len(chunk)
            if not message.get("more_body", False):
                break
        self.completed.append(scope["path"])
        doc = {
            "upstream": self.name,
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_sha256": digest.hexdigest(),
            "body_length": length,
        }
        status = int(query.get("status", ["200"])[0])
        extra = [(b"x-upstream", self.name.encode())]
        if "revoke" in query:
            # As an issuer answers a change that revoked tokens.
            seq = self.issuers.revoke(self.name, query["revoke"][0])
            extra.append((REVOCATIONS_HEADER.encode(), str(seq).encode()))
        await self._json(send, status, doc, extra)

    async def _blob(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        start, end, status = 0, size, 200
        extra: list[tuple[bytes, bytes]] = [(b"accept-ranges", b"bytes")]
        for key, value in scope["headers"]:
            if key == b"range" and value.startswith(b"bytes="):
                first, _, last = value[6:].decode().partition("-")
                start = int(first)
                end = min(size, int(last) + 1) if last else size
                status = 206
                extra.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"%d" % (end - start)),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            pos = start
            while pos < end:
                if gone.done():
                    self.aborted_downloads.append(scope["path"])
                    return
                step = min(256 * 1024, end - pos)
                piece = blob(pos, pos + step)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                await asyncio.sleep(0)
                pos += step
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()

    async def _chunked(self, send: Send, parts: int) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for i in range(parts):
            await send({"type": "http.response.body", "body": b"part-%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _broken(self, send: Send) -> None:
        headers = [(b"content-length", b"%d" % (4 * 1024 * 1024))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * 200_000, "more_body": True})
        raise RuntimeError("the stub breaks off its body on purpose")

    async def _hop(self, send: Send) -> None:
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", b"2"),
            (b"connection", b"x-private"),
            (b"x-private", b"secret"),
            (b"keep-alive", b"timeout=99"),
            (b"proxy-authenticate", b"Basic"),
            (b"trailer", b"x-checksum"),
            (b"upgrade", b"h2c"),
            (b"x-kept", b"yes"),
            (b"x-men-requestid", b"upstream-made-this-up"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        entry: dict[str, Any] = {
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": _headers_dict(scope),
            "subprotocols": list(scope.get("subprotocols", [])),
            "upstream": self.name,
        }
        self.ws_log.append(entry)
        if scope["path"].endswith("/reject"):
            body = b'{"error":"device not connected","request_id":"x"}'
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 409,
                    "headers": [(b"content-type", b"application/json"), (b"x-reason", b"offline")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        subprotocol = entry["subprotocols"][0] if entry["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                entry["close_code"] = message.get("code")
                entry["close_reason"] = message.get("reason", "")
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
                return
            if text is not None:
                await send({"type": "websocket.send", "text": f"{self.name}:{text}"})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


class _Server(uvicorn.Server):
    # Several servers share the test process: none of them may take over its signals.
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@asynccontextmanager
async def serve(app: Any, **overrides: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a fresh loopback port; yield its base URL."""
    options: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "ws": "websockets-sansio",
        "timeout_graceful_shutdown": 1,
        **overrides,
    }
    async with serve_config(uvicorn.Config(app, **options)) as url:
        yield url


@asynccontextmanager
async def serve_config(config: uvicorn.Config) -> AsyncIterator[str]:
    """Serve with a prepared uvicorn config (the gateway's own) on a fresh loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), interval=0.005, what="started")
        if not server.started:
            task.result()
            raise RuntimeError("server did not start")
        yield f"{'https' if config.is_ssl else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
