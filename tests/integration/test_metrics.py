"""`/metrics` of the real processes: every service's, and a gateway's on its private listener."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import httpx
import pytest

from common.localstack.embedded import free_port
from common.localstack.launcher import Stack
from common.localstack.processes import spawn, stop_all
from tests.toolkit import Scrape, wait_until
from tests.toolkit.metrics import SERVICE_FAMILIES


def _scrape(url: str) -> Scrape:
    return Scrape.of(httpx.get(f"{url}/metrics"))


class TestServices:
    def test_every_service_serves_its_metrics(self, stack: Stack) -> None:
        assert stack.addrs
        for name, addr in stack.addrs.items():
            page = _scrape(addr)
            for family in SERVICE_FAMILIES:
                assert family in page.families, f"{name} lacks {family}"

    def test_health_checks_are_counted_under_their_template(self, stack: Stack) -> None:
        addr = stack.addrs["inventory"]
        labels = {
            "route": "/api/internal/v1/inventory/alive",
            "method": "GET",
            "status": "204",
        }
        count = "fleetport_http_request_duration_seconds_count"
        before = _scrape(addr).value(count, **labels)
        assert httpx.get(f"{addr}/api/internal/v1/inventory/alive").status_code == 204
        assert _scrape(addr).value(count, **labels) == before + 1

    def test_not_routed_by_the_gateway(self, stack: Stack) -> None:
        r = httpx.get(f"{stack.url}/metrics")
        assert r.status_code == 404
        assert r.json()["error"] == "not found"


@pytest.fixture(scope="module")
def metered_gateway(stack: Stack) -> Iterator[tuple[str, str]]:
    """A gateway process beside the stack's, its metrics on a port of their own: both URLs."""
    public, metrics = free_port(), free_port()
    env = {
        **os.environ,
        "GATEWAY_LISTEN_PORT": str(public),
        "GATEWAY_METRICS_PORT": str(metrics),
        **{f"GATEWAY_{name.upper()}_ADDR": addr for name, addr in stack.addrs.items()},
    }
    proc = spawn([sys.executable, "-m", "gateway"], env=env, log=stack.logs / "gateway-m.log")
    urls = (f"http://127.0.0.1:{public}", f"http://127.0.0.1:{metrics}")

    def up() -> bool:
        try:
            return httpx.get(f"{urls[0]}/status").status_code == 204
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=30, what="the gateway up")
        yield urls
    finally:
        stop_all([proc])


class TestGateway:
    def test_metrics_on_the_private_listener_only(self, metered_gateway: tuple[str, str]) -> None:
        public, metrics = metered_gateway
        labels = {"route": "/status", "method": "GET", "status": "204"}
        count = "fleetport_http_request_duration_seconds_count"
        before = _scrape(metrics).value(count, **labels)
        assert httpx.get(f"{public}/status").status_code == 204
        page = _scrape(metrics)
        assert page.value(count, **labels) == before + 1
        synced = "fleetport_gateway_revocation_last_sync_timestamp_seconds"
        for issuer in ("deviceauth", "useradm"):
            assert page.value(synced, issuer=issuer) > 0
        r = httpx.get(f"{public}/metrics")
        assert r.status_code == 404
        assert "fleetport_" not in r.text
