"""The websocket proxy (deviceconnect) through a real gateway."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from common.localstack.embedded import free_port
from tests.gateway.conftest import GatewayFactory, RunningGateway, Upstreams
from tests.gateway.stubs import IssuerControl, claims_of, make_token
from tests.toolkit import eventually

DEVICE_WS = "/api/devices/v1/deviceconnect/connect"
USER_WS = "/api/management/v1/deviceconnect/devices/{id}/connect"
PLAYBACK = "/api/management/v1/deviceconnect/sessions/{id}/playback"


def _ws(gw: RunningGateway, path: str) -> str:
    return "ws" + gw.url.removeprefix("http") + path


def _open(gw: RunningGateway, path: str, token: str | None, **kwargs: object) -> connect:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    extra = kwargs.pop("headers", {})
    assert isinstance(extra, dict)
    return connect(
        _ws(gw, path),
        additional_headers={**headers, **extra},
        open_timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


async def _closed(ws: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)


class TestDeviceConnect:
    async def test_text_and_binary_frames(self, gw: RunningGateway, issuers: IssuerControl) -> None:
        token = make_token()
        async with _open(gw, DEVICE_WS, token) as ws:
            await ws.send("hello")
            assert await ws.recv() == "deviceconnect:hello"
            frame = bytes(range(256)) * 64
            await ws.send(frame)
            assert await ws.recv() == frame[::-1]
        # Checked by the gateway itself.
        assert issuers.asked() == []

    async def test_upstream_handshake_carries_credentials_and_request_id(
        self, gw: RunningGateway, upstreams: Upstreams
    ) -> None:
        token = make_token()
        async with _open(gw, f"{DEVICE_WS}?x=1", token, headers={"X-MEN-RequestID": "ws-1"}) as ws:
            assert ws.response is not None
            assert ws.response.headers["X-MEN-RequestID"] == "ws-1"
            await ws.send("ping")
            await ws.recv()
        [entry] = upstreams.stubs["deviceconnect"].ws_log
        headers = entry["headers"]
        assert entry["path"] == DEVICE_WS
        assert entry["query"] == "x=1"
        assert headers["authorization"] == f"Bearer {token}"
        assert headers["x-men-requestid"] == "ws-1"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-uri"] == f"{DEVICE_WS}?x=1"

    async def test_upstream_close_code_reaches_the_client(self, gw: RunningGateway) -> None:
        async with _open(gw, DEVICE_WS, make_token()) as ws:
            await ws.send("close:4001")
            await _closed(ws)
            assert ws.close_code == 4001
            assert ws.close_reason == "bye"

    async def test_client_close_code_reaches_the_upstream(
        self, gw: RunningGateway, upstreams: Upstreams
    ) -> None:
        async with _open(gw, DEVICE_WS, make_token()) as ws:
            await ws.send("hi")
            await ws.recv()
            await ws.close(code=4002, reason="done")
        log = upstreams.stubs["deviceconnect"].ws_log
        await eventually(lambda: "close_code" in log[0], what="the upstream saw the close")
        assert log[0]["close_code"] == 4002
        assert log[0]["close_reason"] == "done"

    async def test_missing_token_refused_before_upgrade(
        self, gw: RunningGateway, upstreams: Upstreams
    ) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with _open(gw, DEVICE_WS, None):
                pass
        response = caught.value.response
        assert response.status_code == 401
        body = json.loads(response.body)
        assert body["error"] == "Authorization not present in header"
        assert body["request_id"] == response.headers["X-MEN-RequestID"]
        assert upstreams.stubs["deviceconnect"].ws_log == []

    async def test_revoked_token_refused_before_upgrade(
        self, gw: RunningGateway, issuers: IssuerControl, upstreams: Upstreams
    ) -> None:
        token = make_token()
        seq = issuers.revoke("deviceauth", f"jti:{claims_of(token)['jti']}")
        await gw.app.issuer("deviceauth").catch_up(seq)
        with pytest.raises(InvalidStatus) as caught:
            async with _open(gw, DEVICE_WS, token):
                pass
        response = caught.value.response
        assert response.status_code == 401
        assert json.loads(response.body)["error"] == "token invalid"
        assert upstreams.stubs["deviceconnect"].ws_log == []

    async def test_expired_token_refused_before_upgrade(
        self, gw: RunningGateway, upstreams: Upstreams
    ) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with _open(gw, DEVICE_WS, make_token(exp=1)):
                pass
        response = caught.value.response
        assert response.status_code == 403
        assert json.loads(response.body)["error"] == "token expired"
        assert upstreams.stubs["deviceconnect"].ws_log == []

    async def test_upstream_refusal_relayed(self, gw: RunningGateway) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with _open(gw, f"{DEVICE_WS}/reject", make_token()):
                pass
        response = caught.value.response
        assert response.status_code == 409
        assert response.headers["x-reason"] == "offline"
        assert json.loads(response.body)["error"] == "device not connected"

    async def test_unknown_path(self, gw: RunningGateway) -> None:
        with pytest.raises(InvalidStatus) as caught:
            async with _open(gw, "/api/internal/v1/deviceconnect/x", make_token()):
                pass
        assert caught.value.response.status_code == 404
        assert json.loads(caught.value.response.body)["error"] == "not found"

    async def test_upstream_down(self, gateway_factory: GatewayFactory) -> None:
        async with gateway_factory(deviceconnect_addr=f"http://127.0.0.1:{free_port()}") as gw:
            with pytest.raises(InvalidStatus) as caught:
                async with _open(gw, DEVICE_WS, make_token()):
                    pass
            assert caught.value.response.status_code == 502
            body = json.loads(caught.value.response.body)
            assert body["error"] == "deviceconnect is unreachable"

    async def test_not_deployed(
        self, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with gateway_factory(deviceconnect_addr=None) as gw:
            with caplog.at_level(logging.INFO, logger="uvicorn.error"):
                with pytest.raises(InvalidStatus) as caught:
                    async with _open(gw, DEVICE_WS, make_token()):
                        pass
                await asyncio.sleep(0.1)
            response = caught.value.response
            assert response.status_code == 503
            assert json.loads(response.body or b"")["error"] == "deviceconnect is not available"
            # One access line, no error about an unfinished handshake.
            lines = [r for r in caplog.records if DEVICE_WS in r.getMessage()]
            assert [(r.levelname, r.getMessage().endswith(" 503")) for r in lines] == [
                ("INFO", True)
            ]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    async def test_refused_token_logs_one_line(
        self, gw: RunningGateway, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="uvicorn.error"):
            with pytest.raises(InvalidStatus) as caught:
                async with _open(gw, DEVICE_WS, make_token(device=False)):
                    pass
            await asyncio.sleep(0.1)
        assert caught.value.response.status_code == 401
        lines = [r.getMessage() for r in caplog.records if DEVICE_WS in r.getMessage()]
        assert len(lines) == 1
        assert lines[0].endswith(" 401")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    async def test_rate_limited(self, gateway_factory: GatewayFactory) -> None:
        async with gateway_factory(rate_limit_per_second=0.2, rate_limit_burst=1) as gw:
            async with _open(gw, DEVICE_WS, make_token()) as ws:
                await ws.send("x")
                await ws.recv()
            with pytest.raises(InvalidStatus) as caught:
                async with _open(gw, DEVICE_WS, make_token()):
                    pass
            response = caught.value.response
            assert response.status_code == 429
            assert response.headers["Retry-After"] == "5"
            assert json.loads(response.body)["error"] == "too many requests"


class TestUserSessions:
    async def test_terminal_with_user_token(
        self, gw: RunningGateway, issuers: IssuerControl
    ) -> None:
        path = USER_WS.format(id=uuid.uuid4())
        async with _open(gw, path, make_token(device=False)) as ws:
            await ws.send(b"\x81\xa3hdr")
            assert await ws.recv() == b"rdh\xa3\x81"
        assert issuers.asked() == []

    async def test_playback_with_jwt_cookie(self, gw: RunningGateway, upstreams: Upstreams) -> None:
        token = make_token(device=False)
        path = PLAYBACK.format(id=uuid.uuid4())
        async with _open(gw, path, None, headers={"Cookie": f"JWT={token}"}) as ws:
            await ws.send("play")
            assert await ws.recv() == "deviceconnect:play"
        assert upstreams.stubs["deviceconnect"].ws_log[0]["headers"]["authorization"] == (
            f"Bearer {token}"
        )

    async def test_subprotocol_negotiated_by_the_upstream(self, gw: RunningGateway) -> None:
        path = USER_WS.format(id=uuid.uuid4())
        async with _open(
            gw,
            path,
            make_token(device=False),
            subprotocols=["mender.v1", "other"],
        ) as ws:
            assert ws.subprotocol == "mender.v1"

    async def test_many_frames_both_ways(self, gw: RunningGateway) -> None:
        async with _open(gw, DEVICE_WS, make_token()) as ws:
            for i in range(200):
                await ws.send(f"m{i}")
            received = [await ws.recv() for _ in range(200)]
        assert received == [f"deviceconnect:m{i}" for i in range(200)]
