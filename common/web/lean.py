"""Lean routes: a hot request answered without FastAPI's routing and dependencies.

FastAPI's per-request work (matching the route, solving the dependencies, reading and
validating the body) costs several times what an idle device poll needs. A lean route is a
coroutine that gets the request's scope and body and either answers it or declines with
None; a declined request goes on to the FastAPI app with its body intact, so the app's
route stays the one authority: a lean route answers only requests the app would answer the
same way, and leaves every other case (errors included) to it. A lean route is keyed by
its method and exact path, the template of the FastAPI route it stands in for, and the
request metrics name what it answers by that path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LeanAnswer", "LeanHandler", "LeanRoutes"]

# A body larger than this is left to the app unread beyond it.
_MAX_BODY: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class LeanAnswer:
    """A complete response: status, headers (lower-case names) and body."""

    status: int
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""


# Gets the scope (with `app`, the Starlette app) and the whole request body.
LeanHandler = Callable[[Scope, bytes], Awaitable[LeanAnswer | None]]


@dataclass(frozen=True, slots=True)
class _Answered:
    """Put in the scope as `route`, as FastAPI's routing leaves its route there: the request
    metrics name an answered request by this path, the FastAPI route's own."""

    path: str


class LeanRoutes:
    """Pure ASGI middleware: the requests of `routes`, keyed by (method, path), go first to
    their lean handler; what it declines goes on to the app."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[tuple[str, str], LeanHandler]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        size, complete = 0, False
        while not complete and size <= _MAX_BODY:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            complete = not message.get("more_body", False)
        answer = None
        if complete and size <= _MAX_BODY:
            answer = await handler(scope, b"".join(m.get("body", b"") for m in received))
        if answer is None:
            await self.app(scope, _replay(received, receive), send)
            return
        scope["route"] = _Answered(scope["path"])
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})


def _replay(received: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out the messages already read, then reads on."""
    pending = list(received)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
