"""Real servers inside the test's event loop."""

from __future__ import annotations

import asyncio
from typing import Literal, Self

import uvicorn
from starlette.types import ASGIApp

from common.localstack.embedded import free_port
from tests.toolkit.polling import eventually

__all__ = ["LiveServer"]


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port inside the test's event loop."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifespan: Literal["auto", "on", "off"] = "off",
        tls: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Serve `app`; `tls` is (certificate file, key file) for HTTPS, `host` names the URL."""
        self.port = free_port()
        self._scheme = "https" if tls else "http"
        self._host = host
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan=lifespan,
                ssl_certfile=tls[0] if tls else None,
                ssl_keyfile=tls[1] if tls else None,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"{self._scheme}://{self._host}:{self.port}"

    async def start(self) -> None:
        """Start serving (again, after `stop`) and return once the socket accepts connections."""
        self._server.should_exit = self._server.started = False
        self._task = asyncio.create_task(self._server.serve())
        await eventually(lambda: self._server.started, what="the server started")

    async def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
