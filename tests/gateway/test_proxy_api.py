"""The proxy hop through a real gateway: headers, request ids, streamed bodies, ranges."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import uuid
from collections.abc import AsyncIterator

import httpx

from tests.gateway.conftest import RunningGateway, Upstreams
from tests.gateway.stubs import blob, raw_exchange
from tests.toolkit import eventually

PUBLIC = "/api/management/v1/useradm/auth/login"
DOWNLOAD = "/api/devices/v1/deployments/download"


def _forwarded(response: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


class TestRequestId:
    async def test_created_when_absent(self, gw: RunningGateway) -> None:
        r = await gw.client.get(PUBLIC)
        rid = r.headers["X-MEN-RequestID"]
        assert uuid.UUID(rid).version == 4
        assert _forwarded(r)["x-men-requestid"] == [rid]

    async def test_client_id_propagated_and_echoed(self, gw: RunningGateway) -> None:
        r = await gw.client.get(PUBLIC, headers={"X-MEN-RequestID": "trace-42"})
        assert r.headers["X-MEN-RequestID"] == "trace-42"
        assert _forwarded(r)["x-men-requestid"] == ["trace-42"]

    async def test_unusable_id_replaced(self, gw: RunningGateway) -> None:
        r = await gw.client.get(PUBLIC, headers={"X-MEN-RequestID": "x" * 200})
        rid = r.headers["X-MEN-RequestID"]
        uuid.UUID(rid)
        assert _forwarded(r)["x-men-requestid"] == [rid]

    async def test_upstream_id_does_not_override(self, gw: RunningGateway) -> None:
        r = await gw.client.get("/api/management/v1/useradm/auth/hop")
        assert r.headers.get_list("X-MEN-RequestID") == [r.headers["X-MEN-RequestID"]]
        assert r.headers["X-MEN-RequestID"] != "upstream-made-this-up"

    async def test_on_gateway_errors(self, gw: RunningGateway) -> None:
        r = await gw.client.get("/nowhere", headers={"X-MEN-RequestID": "err-1"})
        assert r.status_code == 404
        assert r.headers["X-MEN-RequestID"] == "err-1"
        assert r.json()["request_id"] == "err-1"


class TestHeaders:
    async def test_hop_by_hop_request_headers_dropped(self, gw: RunningGateway) -> None:
        r = await gw.client.get(
            PUBLIC,
            headers={
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic eDp5",
                "Upgrade": "h2c",
                "X-Custom": "kept",
            },
        )
        forwarded = _forwarded(r)
        for name in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
            assert name not in forwarded, name
        assert forwarded["x-custom"] == ["kept"]

    async def test_hop_by_hop_response_headers_dropped(self, gw: RunningGateway) -> None:
        r = await gw.client.get("/api/management/v1/useradm/auth/hop")
        assert r.text == "ok"
        assert r.headers["x-kept"] == "yes"
        for name in ("x-private", "proxy-authenticate", "trailer", "upgrade", "keep-alive"):
            assert name not in r.headers, name
        assert "x-private" not in r.headers.get("connection", "")

    async def test_forwarding_headers_set_by_the_gateway(self, gw: RunningGateway) -> None:
        r = await gw.client.get(
            f"{PUBLIC}?x=1",
            headers={
                "X-Forwarded-For": "6.6.6.6",
                "X-Forwarded-Host": "evil.example",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Uri": "/api/internal/v1/x",
                "X-Real-IP": "6.6.6.6",
                "Forwarded": "for=6.6.6.6",
            },
        )
        forwarded = _forwarded(r)
        host = gw.url.removeprefix("http://")
        assert forwarded["x-forwarded-for"] == ["127.0.0.1"]
        assert forwarded["x-forwarded-host"] == [host]
        assert forwarded["x-forwarded-proto"] == ["http"]
        assert forwarded["x-forwarded-uri"] == [f"{PUBLIC}?x=1"]
        assert "x-real-ip" not in forwarded
        assert "forwarded" not in forwarded
        assert forwarded["host"] == [host]

    async def test_compressed_bodies_pass_as_they_are(self, gw: RunningGateway) -> None:
        r = await gw.client.get(PUBLIC, headers={"Accept-Encoding": "gzip"})
        assert _forwarded(r)["accept-encoding"] == ["gzip"]
        async with gw.client.stream("GET", "/api/management/v1/useradm/auth/gzip") as r:
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-length"] == str(len(raw))
        assert gzip.decompress(raw) == b'{"compressed": true}' * 100

    async def test_no_headers_added_by_the_proxy_client(self, gw: RunningGateway) -> None:
        status, _, body = await raw_exchange(
            gw.url, f"GET {PUBLIC} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
        )
        assert status == 200
        names = {name for name, _ in json.loads(body)["headers"]}
        assert not names & {"user-agent", "accept", "accept-encoding", "content-type", "cookie"}
        status, _, body = await raw_exchange(
            gw.url,
            f"POST {PUBLIC} HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n"
            "Connection: close\r\n\r\nabc".encode(),
        )
        sent = json.loads(body)
        assert sent["body_length"] == 3
        names = {name for name, _ in sent["headers"]}
        assert "content-type" not in names
        assert "user-agent" not in names


class TestRequestBodies:
    async def test_chunked_upload_arrives_intact(self, gw: RunningGateway) -> None:
        size, step = 50 * 1024 * 1024, 1024 * 1024
        digest = hashlib.sha256()

        async def chunks() -> AsyncIterator[bytes]:
            for pos in range(0, size, step):
                piece = blob(pos, pos + step)
                digest.update(piece)
                yield piece

        r = await gw.client.post(
            "/api/management/v1/useradm/auth/upload", content=chunks(), timeout=120
        )
        assert r.status_code == 200
        body = r.json()
        assert body["body_length"] == size
        assert body["body_sha256"] == digest.hexdigest()
        forwarded = _forwarded(r)
        assert forwarded["transfer-encoding"] == ["chunked"]
        assert "content-length" not in forwarded

    async def test_content_length_upload(self, gw: RunningGateway) -> None:
        data = blob(0, 3 * 1024 * 1024 + 7)
        r = await gw.client.put("/api/management/v1/useradm/auth/upload", content=data)
        body = r.json()
        assert body["body_length"] == len(data)
        assert body["body_sha256"] == hashlib.sha256(data).hexdigest()
        forwarded = _forwarded(r)
        assert forwarded["content-length"] == [str(len(data))]
        assert "transfer-encoding" not in forwarded

    async def test_small_json_body(self, gw: RunningGateway) -> None:
        r = await gw.client.post(PUBLIC, json={"no_expiry": True})
        body = r.json()
        assert body["body_sha256"] == hashlib.sha256(b'{"no_expiry":true}').hexdigest()
        assert _forwarded(r)["content-type"] == ["application/json"]

    async def test_empty_body_post(self, gw: RunningGateway) -> None:
        r = await gw.client.post(PUBLIC)
        assert r.json()["body_length"] == 0

    async def test_client_abort_mid_upload_does_not_complete_upstream(
        self, gw: RunningGateway, upstreams: Upstreams
    ) -> None:
        # A raw socket sends part of a chunked body, then disappears.
        path = f"/api/management/v1/useradm/auth/partial-{uuid.uuid4()}"
        host, port = gw.url.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + b"400\r\n"
            + b"a" * 1024
            + b"\r\n"
        )
        await writer.drain()
        stub = upstreams.stubs["useradm"]
        await eventually(lambda: path in stub.started, what="the upstream request started")
        writer.close()
        await writer.wait_closed()
        r = await gw.client.post(f"{path}-then", content=b"next")
        assert r.status_code == 200
        completed = stub.completed
        assert f"{path}-then" in completed
        assert path not in completed

    async def test_upstream_refusing_before_the_body(self, gw: RunningGateway) -> None:
        # The upstream answers 413 on the headers alone; the client is still uploading.
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"POST /api/management/v1/useradm/auth/early HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\nX-MEN-RequestID: early-1\r\n\r\n"
                b"400\r\n" + b"a" * 1024 + b"\r\n"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 413 ")
        assert b"x-men-requestid: early-1" in head
        assert (await gw.client.get(PUBLIC)).status_code == 200

    async def test_expect_continue(self, gw: RunningGateway) -> None:
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                f"PUT {PUBLIC} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                "Expect: 100-continue\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(-1), 5)
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        sent = json.loads(body)
        assert sent["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert "expect" not in {name for name, _ in sent["headers"]}


class TestResponseBodies:
    async def test_download_keeps_content_length(self, gw: RunningGateway) -> None:
        size = 5 * 1024 * 1024 + 3
        async with gw.client.stream("GET", f"{DOWNLOAD}/blob?size={size}") as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(size)
            assert r.headers["accept-ranges"] == "bytes"
            assert "transfer-encoding" not in r.headers
            data = b"".join([chunk async for chunk in r.aiter_raw()])
        assert data == blob(0, size)

    async def test_range_request(self, gw: RunningGateway) -> None:
        size = 2 * 1024 * 1024
        r = await gw.client.get(
            f"{DOWNLOAD}/blob?size={size}", headers={"Range": "bytes=100000-199999"}
        )
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 100000-199999/{size}"
        assert r.headers["content-length"] == "100000"
        assert r.content == blob(100000, 200000)

    async def test_open_ended_range_resumes(self, gw: RunningGateway) -> None:
        size = 1_000_000
        r = await gw.client.get(f"{DOWNLOAD}/blob?size={size}", headers={"Range": "bytes=999000-"})
        assert r.status_code == 206
        assert r.content == blob(999000, size)

    async def test_head_keeps_content_length(self, gw: RunningGateway) -> None:
        r = await gw.client.head(f"{DOWNLOAD}/blob?size=12345")
        assert r.status_code == 200
        assert r.headers["content-length"] == "12345"
        assert r.content == b""

    async def test_chunked_response(self, gw: RunningGateway) -> None:
        r = await gw.client.get("/api/management/v1/useradm/auth/chunked?parts=5")
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.text == "".join(f"part-{i}\n" for i in range(5))

    async def test_upstream_breaking_off_aborts_the_client_connection(
        self, gw: RunningGateway
    ) -> None:
        try:
            r = await gw.client.get("/api/management/v1/useradm/auth/broken")
        except httpx.TransportError:
            pass
        else:
            raise AssertionError(f"a truncated body was completed: {len(r.content)} bytes")
        # The gateway itself carries on.
        r = await gw.client.get(PUBLIC)
        assert r.status_code == 200
        assert r.json()["path"] == PUBLIC

    async def test_client_leaving_a_download_stops_it(
        self, gw: RunningGateway, upstreams: Upstreams
    ) -> None:
        size = 1024 * 1024 * 1024
        path = f"{DOWNLOAD}/{uuid.uuid4()}/blob"
        async with httpx.AsyncClient(base_url=gw.url) as client:
            async with client.stream("GET", f"{path}?size={size}") as r:
                async for _ in r.aiter_raw():
                    break
        # The gateway hangs up on the upstream instead of draining a gigabyte for nobody.
        aborted = upstreams.stubs["deployments"].aborted_downloads
        await eventually(lambda: path in aborted, what="the upstream download aborted")
