"""HTTP requests to hosts that users configure (webhooks, IoT Hub), guarded against SSRF.

A host must resolve to global unicast addresses only: loopback, private, link-local and
other reserved addresses are refused unless `allow_private` is set. A direct request goes
to the very address that was checked (the name is kept for the `Host` header and TLS), so
a name cannot resolve to one address for the check and to another for the connection.

Proxies come from `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (or their lower-case forms):
through a proxy, the target's addresses are still checked, and the proxy connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Mapping
from typing import Final

import httpx

__all__ = ["OutboundClient", "TargetRefused", "proxies_from"]

_SCHEMES: Final = ("http", "https")


class TargetRefused(Exception):
    """The URL may not be called: malformed, unresolvable, or a reserved address."""


def proxies_from(environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy settings (`http`, `https`, `no`) found in an environment."""
    found: dict[str, str] = {}
    for name in ("http", "https", "no"):
        value = environ.get(f"{name}_proxy") or environ.get(f"{name.upper()}_PROXY")
        if value:
            found[name] = value
    return found


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY (`*`, host names, domain suffixes, addresses or networks,
    optionally with a port) exempts a host from the proxy."""
    host = host.lower().rstrip(".")
    for entry in filter(None, (e.strip().lower() for e in no_proxy.split(","))):
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]").lstrip(".")
        if _is_ip(host) and _in_network(host, name):
            return True
        if host == name or host.endswith("." + name):
            return True
    return False


def _in_network(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:  # not a network: a host name
        return False


def _reserved(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not ip.is_global or ip.is_multicast


def _port(target: httpx.URL) -> int:
    return target.port or (443 if target.scheme == "https" else 80)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class OutboundClient:
    """Sends requests to user-configured URLs: address checks, pinning, proxies, timeouts."""

    def __init__(
        self,
        *,
        timeout: float,
        allow_private: bool,
        verify: ssl.SSLContext | bool = True,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._proxies = dict(proxies or {})
        self._timeout = httpx.Timeout(timeout)
        self._verify = verify
        self._direct = self._client(None)
        self._proxied: dict[str, httpx.AsyncClient] = {}

    def _client(self, proxy: str | None) -> httpx.AsyncClient:
        # Redirects are not followed: a target cannot send a request on elsewhere.
        return httpx.AsyncClient(
            proxy=proxy, timeout=self._timeout, verify=self._verify, trust_env=False
        )

    async def aclose(self) -> None:
        """Close every connection."""
        for client in (self._direct, *self._proxied.values()):
            await client.aclose()

    async def check(self, url: str) -> None:
        """Refuse (TargetRefused) a URL that is malformed, or whose host is unresolvable or
        (unless private targets are allowed) resolves to a reserved address."""
        target = self._parse(url)
        try:
            await self._addresses(target)
        except httpx.ConnectError as exc:
            raise TargetRefused(str(exc)) from None

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request (TargetRefused for a forbidden target, httpx errors otherwise)."""
        target = self._parse(url)
        proxy = self._proxy_for(target)
        if proxy is not None:
            if not self._allow_private:
                await self._addresses(target)
            client = self._proxied.get(proxy)
            if client is None:
                client = self._proxied[proxy] = self._client(proxy)
            return await client.request(method, target, content=content, headers=headers)
        address = (await self._addresses(target))[0]
        pinned = target.copy_with(host=address)
        extensions = {}
        if target.scheme == "https" and not _is_ip(target.host):
            extensions["sni_hostname"] = target.host
        return await self._direct.request(
            method,
            pinned,
            content=content,
            headers={"Host": target.netloc.decode("ascii"), **(headers or {})},
            extensions=extensions,
        )

    @staticmethod
    def _parse(url: str) -> httpx.URL:
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise TargetRefused(f"invalid URL: {exc}") from None
        if target.scheme not in _SCHEMES or not target.host:
            raise TargetRefused("the URL must be http:// or https:// with a host")
        return target

    def _proxy_for(self, target: httpx.URL) -> str | None:
        proxy = self._proxies.get(target.scheme)
        if proxy is None or _bypassed(target.host, _port(target), self._proxies.get("no", "")):
            return None
        return proxy

    async def _addresses(self, target: httpx.URL) -> list[str]:
        """The host's addresses, all of them allowed (or TargetRefused / ConnectError)."""
        host = target.host
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, _port(target), type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve host {host!r}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self._allow_private:
            reserved = [a for a in addresses if _reserved(a)]
            if reserved:
                raise TargetRefused(
                    f"host {host!r} resolves to a reserved address ({', '.join(reserved)}); "
                    "only global unicast addresses may be called"
                )
        return addresses
