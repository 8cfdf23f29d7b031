"""Real servers inside the test's event loop."""

from __future__ import annotations

import asyncio
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from common.embedded import free_port
from tests.toolkit.polling import eventually

__all__ = ["LiveServer"]


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port inside the test's event loop."""

    def __init__(self, app: ASGIApp, *, lifespan: Literal["auto", "on", "off"] = "off") -> None:
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
        await eventually(lambda: self._server.started, what="the server started")

    async def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
