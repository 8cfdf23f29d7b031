"""The gateway's metrics: on a private listener only, by route-table entry, token checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.gateway.conftest import GatewayFactory, RunningGateway
from tests.gateway.stubs import IssuerControl, claims_of, make_token
from tests.toolkit import Scrape, assert_error, eventually

DEVICE_PATH = "/api/devices/v1/inventory/device/attributes"
DEVICE_ROUTE = "/api/devices/v{N}/inventory"
DEVICE_WS = "/api/devices/v1/deviceconnect/connect"
_REQUESTS = "fleetport_http_request_duration_seconds_count"


@pytest.fixture
async def metered(gateway_factory: GatewayFactory) -> AsyncIterator[RunningGateway]:
    """A gateway whose metrics listener is on (on a free port of the loopback interface)."""
    async with gateway_factory(metrics_port=0) as running:
        yield running


async def _scrape(gw: RunningGateway) -> Scrape:
    port = gw.app.metrics_port
    assert port is not None
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    return Scrape(r.text)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestExposure:
    async def test_not_on_the_public_listener(self, metered: RunningGateway) -> None:
        r = await metered.client.get("/metrics")
        assert_error(r, 404, "not found")
        assert "fleetport_" not in r.text

    async def test_off_by_default(self, gw: RunningGateway) -> None:
        assert gw.app.metrics_port is None
        assert_error(await gw.client.get("/metrics"), 404, "not found")

    async def test_families(self, metered: RunningGateway) -> None:
        await metered.client.get(DEVICE_PATH, headers=_bearer(make_token()))
        page = await _scrape(metered)
        for family in (
            "fleetport_http_request_duration_seconds",
            "fleetport_gateway_token_cache",
            "fleetport_gateway_token_checks",
            "fleetport_gateway_revocation_last_sync_timestamp_seconds",
            "fleetport_gateway_revocation_sequence",
            "fleetport_gateway_websockets",
            "process_cpu_seconds",
        ):
            assert family in page.families


class TestRequests:
    async def test_counted_under_the_route_table_entry(self, metered: RunningGateway) -> None:
        labels = {"route": DEVICE_ROUTE, "method": "GET", "status": "200"}
        before = (await _scrape(metered)).value(_REQUESTS, **labels)
        token = make_token()
        for path in (DEVICE_PATH, f"{DEVICE_PATH}/more/{claims_of(token)['jti']}"):
            assert (await metered.client.get(path, headers=_bearer(token))).status_code == 200
        page = await _scrape(metered)
        assert page.value(_REQUESTS, **labels) == before + 2
        assert claims_of(token)["jti"] not in str(page.families)

    async def test_refusals_and_unrouted_paths(self, metered: RunningGateway) -> None:
        refused = {"route": DEVICE_ROUTE, "method": "GET", "status": "401"}
        unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
        status = {"route": "/status", "method": "GET", "status": "204"}
        before = await _scrape(metered)
        assert (await metered.client.get(DEVICE_PATH)).status_code == 401
        assert (await metered.client.get("/nowhere/at/all")).status_code == 404
        assert (await metered.client.get("/status")).status_code == 204
        after = await _scrape(metered)
        for labels in (refused, unmatched, status):
            assert after.value(_REQUESTS, **labels) == before.value(_REQUESTS, **labels) + 1


class TestTokenChecks:
    async def test_cache_and_outcomes(
        self, metered: RunningGateway, issuers: IssuerControl
    ) -> None:
        token = make_token()
        before = await _scrape(metered)
        for _ in range(3):
            await metered.client.get(DEVICE_PATH, headers=_bearer(token))
        await metered.client.get(DEVICE_PATH)
        await metered.client.get(DEVICE_PATH, headers=_bearer("not.a.token"))
        issuers.revoke("deviceauth", f"jti:{claims_of(token)['jti']}")

        async def refused() -> bool:
            r = await metered.client.get(DEVICE_PATH, headers=_bearer(token))
            return r.status_code == 401

        await eventually(refused, within=1.0, what="the revoked token refused")
        after = await _scrape(metered)

        def delta(sample: str, **labels: str) -> float:
            return after.value(sample, **labels) - before.value(sample, **labels)

        cache = "fleetport_gateway_token_cache_total"
        checks = "fleetport_gateway_token_checks_total"
        assert delta(cache, kind="device", result="miss") == 2  # the token, the malformed one
        assert delta(cache, kind="device", result="hit") >= 3
        assert delta(checks, kind="device", outcome="accepted") >= 3
        assert delta(checks, kind="device", outcome="missing") == 1
        assert delta(checks, kind="device", outcome="malformed") == 1
        assert delta(checks, kind="device", outcome="revoked") == 1

    async def test_revocation_feed(self, metered: RunningGateway, issuers: IssuerControl) -> None:
        seq = issuers.revoke("deviceauth", "jti:gone")
        sequence = "fleetport_gateway_revocation_sequence"

        async def applied() -> Scrape | None:
            page = await _scrape(metered)
            return page if page.value(sequence, issuer="deviceauth") == seq else None

        page = await eventually(applied, within=1.0, what="the sequence exported")
        synced = page.value(
            "fleetport_gateway_revocation_last_sync_timestamp_seconds", issuer="deviceauth"
        )
        assert synced > 0


class TestWebsockets:
    async def test_open_websockets_by_upstream(self, metered: RunningGateway) -> None:
        gauge = "fleetport_gateway_websockets"
        before = (await _scrape(metered)).value(gauge, upstream="deviceconnect")
        url = "ws" + metered.url.removeprefix("http") + DEVICE_WS
        async with connect(url, additional_headers=_bearer(make_token()), open_timeout=5) as ws:
            await ws.send("hello")
            assert await ws.recv() == "deviceconnect:hello"
            page = await _scrape(metered)
            assert page.value(gauge, upstream="deviceconnect") == before + 1

        async def closed() -> bool:
            page = await _scrape(metered)
            return page.value(gauge, upstream="deviceconnect") == before

        await eventually(closed, within=5.0, what="the websocket no longer counted")
