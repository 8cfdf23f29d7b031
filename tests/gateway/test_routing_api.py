"""Routing through a real gateway: upstream choice, hidden paths, missing and dead upstreams."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from common.localstack.embedded import free_port
from gateway.routes import ROUTES, AuthMode, Route
from tests.gateway.conftest import GatewayFactory, RunningGateway, Upstreams
from tests.gateway.stubs import IssuerControl, make_token
from tests.toolkit import assert_error


def _assert_error(response: httpx.Response, status: int, message: str | None = None) -> None:
    """The gateway's own refusal: Mender's shape, a request id it made, the exact message."""
    got = assert_error(response, status)
    uuid.UUID(response.headers["X-MEN-RequestID"])
    if message is not None:
        assert got == message


def _example_path(prefix: str) -> str:
    return prefix.replace("v{N}", "v1") + "/some/thing"


class TestStatus:
    async def test_status_is_no_content(self, gw: RunningGateway) -> None:
        r = await gw.client.get("/status")
        assert r.status_code == 204
        assert r.content == b""
        uuid.UUID(r.headers["X-MEN-RequestID"])

    async def test_head(self, gw: RunningGateway) -> None:
        r = await gw.client.head("/status")
        assert r.status_code == 204
        assert r.content == b""
        uuid.UUID(r.headers["X-MEN-RequestID"])

    async def test_other_methods(self, gw: RunningGateway) -> None:
        r = await gw.client.post("/status")
        _assert_error(r, 405, "method not allowed")
        assert r.headers["allow"] == "GET, HEAD"


class TestRouteTable:
    @pytest.mark.parametrize("route", ROUTES, ids=[r.prefix for r in ROUTES])
    async def test_prefix_reaches_its_upstream(
        self, gw: RunningGateway, issuers: IssuerControl, route: Route
    ) -> None:
        path = _example_path(route.prefix)
        token = make_token(device=route.auth is AuthMode.DEVICE)
        r = await gw.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["upstream"] == route.upstream
        assert body["path"] == path
        assert r.headers["x-upstream"] == route.upstream
        # Tokens are checked by the gateway itself: no issuer is asked.
        assert issuers.asked() == []

    async def test_path_and_query_untouched(self, gw: RunningGateway) -> None:
        raw = "/api/management/v1/useradm/auth/login/a%2Fb%20c/%7Euser;x=1"
        query = "q=a%26b&q=%C3%A9&empty=&flag"
        r = await gw.client.get(f"{raw}?{query}")
        body = r.json()
        assert body["raw_path"] == raw
        assert body["query"] == query

    async def test_method_preserved(self, gw: RunningGateway) -> None:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            r = await gw.client.request(method, "/api/management/v1/useradm/auth/login")
            assert r.json()["method"] == method

    async def test_upstream_status_relayed(self, gw: RunningGateway) -> None:
        r = await gw.client.get("/api/management/v1/useradm/auth/login?status=418")
        assert r.status_code == 418
        assert r.json()["upstream"] == "useradm"


class TestHidden:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/internal/v1/useradm/health",
            "/api/internal/v1/devauth/tokens/verify",
            "/api/internal/v1/deployments/tenants//deployments",
            "/",
            "/api/devices/v1/nosuch/thing",
            "/api/devices/v1/devauth/devices",
            "/api/management/v1/useradmx/users",
            "/api/devices/v1/deployments/download/../../../internal/v1/deployments/health",
            "/ui/",
        ],
    )
    async def test_not_found(self, gw: RunningGateway, upstreams: Upstreams, path: str) -> None:
        r = await gw.client.get(path, headers={"Authorization": f"Bearer {make_token()}"})
        _assert_error(r, 404, "not found")
        assert all(path not in stub.started for stub in upstreams.stubs.values())

    async def test_not_found_for_any_method(self, gw: RunningGateway) -> None:
        r = await gw.client.delete("/api/internal/v1/devauth/tokens")
        _assert_error(r, 404, "not found")


class TestUnavailableUpstreams:
    async def test_not_deployed(self, gateway_factory: GatewayFactory) -> None:
        async with gateway_factory(auditlogs_addr=None, deviceauth_addr="") as gw:
            r = await gw.client.get("/api/management/v1/auditlogs/logs")
            _assert_error(r, 503, "auditlogs is not available")
            token = make_token(device=False)
            r = await gw.client.get(
                "/api/management/v1/auditlogs/logs", headers={"Authorization": f"Bearer {token}"}
            )
            _assert_error(r, 503, "auditlogs is not available")
            r = await gw.client.post("/api/devices/v1/authentication/auth_requests", json={})
            _assert_error(r, 503, "deviceauth is not available")

    async def test_issuer_not_deployed(self, gateway_factory: GatewayFactory) -> None:
        async with gateway_factory(deviceauth_addr=None) as gw:
            r = await gw.client.get(
                "/api/devices/v1/inventory/device/attributes",
                headers={"Authorization": f"Bearer {make_token()}"},
            )
            _assert_error(r, 503, "deviceauth is not available")

    async def test_upstream_down_is_a_quick_bad_gateway(
        self, gateway_factory: GatewayFactory
    ) -> None:
        dead = f"http://127.0.0.1:{free_port()}"
        async with gateway_factory(useradm_addr=dead, verify_timeout=0.5) as gw:
            started = time.monotonic()
            r = await gw.client.post("/api/management/v1/useradm/auth/login", content=b"x" * 10)
            _assert_error(r, 502, "useradm is unreachable")
            assert time.monotonic() - started < 2

    async def test_issuer_down_refuses_its_tokens(self, gateway_factory: GatewayFactory) -> None:
        # Without its keys and revocations no token can be checked: refused, not let through.
        dead = f"http://127.0.0.1:{free_port()}"
        async with gateway_factory(deviceauth_addr=dead, verify_timeout=0.5) as gw:
            r = await gw.client.get(
                "/api/devices/v1/inventory/device/attributes",
                headers={"Authorization": f"Bearer {make_token()}"},
            )
            _assert_error(r, 503, "deviceauth is not available")
            # User tokens, checked with useradm's, are not affected.
            r = await gw.client.get(
                "/api/management/v1/inventory/devices",
                headers={"Authorization": f"Bearer {make_token(device=False)}"},
            )
            assert r.json()["upstream"] == "inventory"

    async def test_issuer_failing_at_start(
        self, gateway_factory: GatewayFactory, issuers: IssuerControl
    ) -> None:
        issuers.failing = 500
        async with gateway_factory(verify_timeout=0.3) as gw:
            r = await gw.client.get(
                "/api/devices/v1/inventory/device/attributes",
                headers={"Authorization": f"Bearer {make_token()}"},
            )
            _assert_error(r, 503, "deviceauth is not available")

    async def test_upstream_read_timeout(self, gateway_factory: GatewayFactory) -> None:
        async with gateway_factory(read_timeout=0.3) as gw:
            started = time.monotonic()
            r = await gw.client.get("/api/management/v1/useradm/auth/slow?seconds=1")
            _assert_error(r, 502, "useradm is unreachable")
            assert time.monotonic() - started < 1.5
