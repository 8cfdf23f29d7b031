"""Requests to user-given hosts: reserved addresses refused, proxies from the environment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from services.iot_manager.clients import OutboundClient, TargetRefused, proxies_from
from tests.iot_manager.conftest import Receiver


class _Proxy:
    """A forward HTTP proxy on 127.0.0.1 that records the requests it relays."""

    def __init__(self) -> None:
        self.relayed: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, version = request_line.split(" ")
        self.relayed.append(f"{method} {target}")
        url = urlsplit(target)
        length = next(
            (
                int(h.split(":", 1)[1])
                for h in header_lines
                if h.lower().startswith("content-length")
            ),
            0,
        )
        body = await reader.readexactly(length)
        upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port)
        kept = [h for h in header_lines if h and not h.lower().startswith("connection")]
        upstream_writer.write(
            "\r\n".join(
                [f"{method} {url.path} {version}", *kept, "Connection: close", "", ""]
            ).encode("latin-1")
            + body
        )
        await upstream_writer.drain()
        writer.write(await upstream_reader.read())
        await writer.drain()
        writer.close()
        upstream_writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[_Proxy]:
    server = _Proxy()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def permissive() -> AsyncIterator[OutboundClient]:
    client = OutboundClient(timeout=5, allow_private=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def strict() -> AsyncIterator[OutboundClient]:
    client = OutboundClient(timeout=5, allow_private=False)
    try:
        yield client
    finally:
        await client.aclose()


class TestProxiesFromTheEnvironment:
    def test_upper_and_lower_case(self) -> None:
        environ = {
            "HTTP_PROXY": "http://proxy:3128",
            "https_proxy": "http://secure-proxy:3128",
            "NO_PROXY": "localhost,.internal",
            "PATH": "/usr/bin",
        }
        assert proxies_from(environ) == {
            "http": "http://proxy:3128",
            "https": "http://secure-proxy:3128",
            "no": "localhost,.internal",
        }

    def test_none(self) -> None:
        assert proxies_from({}) == {}


class TestProxy:
    async def test_requests_go_through_the_proxy(self, proxy: _Proxy, receiver: Receiver) -> None:
        client = OutboundClient(timeout=5, allow_private=True, proxies={"http": proxy.url})
        try:
            r = await client.request("POST", receiver.url, content=b"{}", headers={"X-A": "1"})
        finally:
            await client.aclose()
        assert r.status_code == 200
        assert proxy.relayed == [f"POST {receiver.url}"]
        [delivery] = receiver.deliveries
        assert delivery.body == b"{}"
        assert delivery.headers["x-a"] == "1"

    @pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "*", "other, 127.0.0.1"])
    async def test_no_proxy_exempts_a_host(
        self, proxy: _Proxy, receiver: Receiver, no_proxy: str
    ) -> None:
        proxies = {"http": proxy.url, "no": no_proxy}
        client = OutboundClient(timeout=5, allow_private=True, proxies=proxies)
        try:
            r = await client.request("POST", receiver.url, content=b"{}")
        finally:
            await client.aclose()
        assert r.status_code == 200
        assert proxy.relayed == []
        assert len(receiver.deliveries) == 1

    async def test_no_proxy_for_another_port(self, proxy: _Proxy, receiver: Receiver) -> None:
        proxies = {"http": proxy.url, "no": "127.0.0.1:1"}
        client = OutboundClient(timeout=5, allow_private=True, proxies=proxies)
        try:
            await client.request("POST", receiver.url, content=b"{}")
        finally:
            await client.aclose()
        assert proxy.relayed == [f"POST {receiver.url}"]

    async def test_the_target_is_still_checked(self, proxy: _Proxy, receiver: Receiver) -> None:
        client = OutboundClient(timeout=5, allow_private=False, proxies={"http": proxy.url})
        try:
            with pytest.raises(TargetRefused, match="reserved address"):
                await client.request("POST", receiver.url, content=b"{}")
        finally:
            await client.aclose()
        assert proxy.relayed == []
        assert receiver.deliveries == []


class TestAddressGuard:
    @pytest.mark.parametrize(
        "url",
        ["http://localhost/", "http://127.0.0.1:9/", "http://[::1]/", "https://10.0.0.1/x"],
    )
    async def test_reserved_addresses_are_refused(self, strict: OutboundClient, url: str) -> None:
        with pytest.raises(TargetRefused, match="resolves to a reserved address"):
            await strict.check(url)
        with pytest.raises(TargetRefused, match="resolves to a reserved address"):
            await strict.request("GET", url)

    async def test_nothing_is_sent_to_a_refused_target(
        self, strict: OutboundClient, receiver: Receiver
    ) -> None:
        with pytest.raises(TargetRefused):
            await strict.request("POST", receiver.url, content=b"{}")
        assert receiver.deliveries == []

    @pytest.mark.parametrize(
        "url", ["ftp://example.com/", "http:///nohost", "mailto:someone@example.com"]
    )
    async def test_only_http_urls(self, permissive: OutboundClient, url: str) -> None:
        with pytest.raises(TargetRefused, match="must be http:// or https:// with a host"):
            await permissive.check(url)

    async def test_allowed_when_configured(
        self, permissive: OutboundClient, receiver: Receiver
    ) -> None:
        await permissive.check(receiver.url)
        url = receiver.url.replace("127.0.0.1", "localhost")
        r = await permissive.request("POST", url, content=b"{}")
        assert r.status_code == 200
        # Sent to the address that was resolved, under the name that was asked for.
        assert receiver.deliveries[0].headers["host"] == f"localhost:{receiver.server.port}"
