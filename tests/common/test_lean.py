"""Lean routes: answered before FastAPI's routing, or handed on with the body intact."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, Response
from starlette.types import Scope

from common.web.lean import LeanAnswer, LeanRoutes
from tests.conftest import ClientFactory


def _app(calls: list[bytes]) -> FastAPI:
    async def lean(_scope: Scope, body: bytes) -> LeanAnswer | None:
        calls.append(body)
        return LeanAnswer(202, [(b"x-lean", b"1")], b"lean") if body == b"fast" else None

    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), status_code=200)

    app.add_middleware(LeanRoutes, routes={("POST", "/echo"): lean})
    return app


async def test_answered_or_handed_on(asgi_client: ClientFactory) -> None:
    calls: list[bytes] = []
    async with asgi_client(_app(calls)) as client:
        fast = await client.post("/echo", content=b"fast")
        assert (fast.status_code, fast.content, fast.headers["x-lean"]) == (202, b"lean", "1")

        async def pieces() -> AsyncIterator[bytes]:
            for piece in (b"slow", b"-", b"path"):
                yield piece

        slow = await client.post("/echo", content=pieces())
        assert (slow.status_code, slow.content) == (200, b"slow-path")
        assert "x-lean" not in slow.headers
        # Another method is not the lean route's.
        assert (await client.put("/echo", content=b"fast")).status_code == 405
    assert calls == [b"fast", b"slow-path"]


async def test_a_large_body_goes_to_the_app_unread_by_the_lean_route(
    asgi_client: ClientFactory,
) -> None:
    calls: list[bytes] = []
    body = b"x" * (200 * 1024)
    async with asgi_client(_app(calls)) as client:
        response = await client.post("/echo", content=body)
    assert response.status_code == 200
    assert response.content == body
    assert calls == []
