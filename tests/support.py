"""Small helpers for tests that run real servers and wait for real effects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from common.localstack.embedded import free_port

__all__ = ["LiveServer", "child_pids", "eventually", "eventually_async", "is_running"]


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until `predicate()` holds; fail the test if it does not within `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def eventually_async(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until an async predicate holds; fail the test if it does not in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port inside the test's event loop."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifespan: str = "off",
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
        await eventually(lambda: self._server.started)

    async def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None

    async def __aenter__(self) -> LiveServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def child_pids(pid: int) -> set[int]:
    """The ids of a process's direct children."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def is_running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status
