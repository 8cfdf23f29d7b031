"""Fixtures of the gateway tests: stub upstreams on real ports and a gateway in front."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest

from gateway import Gateway, Settings, create_app, server_config
from gateway.config import UPSTREAMS
from tests.gateway.stubs import IssuerControl, StubService, serve, serve_config
from tests.toolkit import ManualClock


@dataclass
class Upstreams:
    """Every upstream's stub and address."""

    issuers: IssuerControl
    stubs: dict[str, StubService]
    addrs: dict[str, str]


@dataclass
class RunningGateway:
    """A gateway served on a real port, with the app object for looking inside."""

    url: str
    app: Gateway
    client: httpx.AsyncClient


@pytest.fixture(scope="session")
async def upstreams() -> AsyncIterator[Upstreams]:
    """One stub server per upstream service, for the whole session."""
    issuers = IssuerControl()
    issuers.reset()
    stubs = {name: StubService(name, issuers) for name in UPSTREAMS}
    addrs: dict[str, str] = {}
    opened = []
    try:
        for name, stub in stubs.items():
            cm = serve(stub)
            addrs[name] = await cm.__aenter__()
            opened.append(cm)
        yield Upstreams(issuers, stubs, addrs)
    finally:
        # Stopping a server takes a tick of its main loop: stop them all at once.
        await asyncio.gather(*(cm.__aexit__(None, None, None) for cm in opened))


@pytest.fixture
def issuers(upstreams: Upstreams) -> IssuerControl:
    """The stub issuers' keys and revocations, with the usual keys and no reads recorded."""
    upstreams.issuers.reset()
    for stub in upstreams.stubs.values():
        stub.ws_log.clear()
    return upstreams.issuers


GatewayFactory = Callable[..., AbstractAsyncContextManager[RunningGateway]]


@asynccontextmanager
async def _start(
    upstreams: Upstreams, *, clock: ManualClock | None = None, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    values: dict[str, Any] = {f"{n}_addr": a for n, a in upstreams.addrs.items()}
    values.update(overrides)
    settings = Settings(**values)
    app = Gateway(settings, wall_clock=clock.time) if clock is not None else create_app(settings)
    async with (
        serve_config(server_config(app, port=0)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield RunningGateway(url, app, client)


@pytest.fixture
def gateway_factory(upstreams: Upstreams, issuers: IssuerControl) -> GatewayFactory:
    """`async with gateway_factory(**settings) as gw`: a gateway of its own on a real port.

    `clock=` (a `ManualClock`) checks expiry and revocation lifetimes on hand-moved time.
    """
    return partial(_start, upstreams)


@pytest.fixture(scope="session")
async def shared_gateway(upstreams: Upstreams) -> AsyncIterator[RunningGateway]:
    """A gateway with every upstream deployed and default settings, for the session."""
    async with _start(upstreams) as running:
        yield running


@pytest.fixture
def gw(shared_gateway: RunningGateway, issuers: IssuerControl) -> RunningGateway:
    """The shared gateway, with the issuers reset (tests use fresh tokens)."""
    return shared_gateway
