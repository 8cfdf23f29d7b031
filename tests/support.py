"""Small helpers for tests that run real servers and wait for real effects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.types import ASGIApp

from common.embedded import free_port

__all__ = ["LiveServer", "eventually", "eventually_async"]


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until `predicate()` holds; fail the test if it does not within `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def eventually_async(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until `await check()` holds; fail the test if it does not within `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port inside the test's event loop."""

    def __init__(self, app: ASGIApp, *, lifespan: str = "off") -> None:
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_config=None, lifespan=lifespan
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start serving and return once the socket accepts connections."""
        self._task = asyncio.create_task(self._server.serve())
        await eventually(lambda: self._server.started)

    async def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
