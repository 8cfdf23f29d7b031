"""The monitor configuration: the device reports its checks, operators read them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.devicemonitor.conftest import DEVICE_API, MANAGEMENT, device_headers, user_headers
from tests.toolkit import assert_error

DEVICE = "3c2b1a09-8f7e-4d6c-9b5a-4e3d2c1b0a9f"
CHECKS = [
    {
        "name": "sshd",
        "status": "enabled",
        "type": "service",
        "service": {"name": "sshd", "type": "systemd"},
    },
    {
        "name": "app-errors",
        "status": "enabled",
        "type": "log",
        "log": {"pattern": "ERROR", "path": "/var/log/app.log", "expire_seconds": 300},
    },
    {
        "name": "usb",
        "status": "disabled",
        "type": "dbus",
        "dbus": {"name": "usb", "pattern": "removed", "watch": "type='signal'"},
    },
]


async def _report(client: httpx.AsyncClient, body: Any, tenant: str = "") -> httpx.Response:
    return await client.post(
        f"{DEVICE_API}/config", json=body, headers=device_headers(DEVICE, tenant)
    )


async def _configuration(client: httpx.AsyncClient, tenant: str = "") -> list[dict[str, Any]]:
    response = await client.get(
        f"{MANAGEMENT}/devices/{DEVICE}/config", headers=user_headers(tenant)
    )
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


class TestReportConfiguration:
    async def test_reported_and_read_back(self, client: httpx.AsyncClient) -> None:
        response = await _report(client, CHECKS)
        assert response.status_code == 204, response.text
        assert await _configuration(client) == CHECKS

    async def test_a_report_replaces_the_last(self, client: httpx.AsyncClient) -> None:
        assert (await _report(client, CHECKS)).status_code == 204
        assert (await _report(client, CHECKS[:1])).status_code == 204
        assert await _configuration(client) == CHECKS[:1]

    async def test_empty_before_a_report(self, client: httpx.AsyncClient) -> None:
        assert await _configuration(client) == []

    async def test_unknown_type(self, client: httpx.AsyncClient) -> None:
        bad = {**CHECKS[0], "type": "cron"}
        assert_error(await _report(client, [bad]), 400, "check 0: type: unknown type 'cron'")
        assert await _configuration(client) == []

    async def test_subsystem_missing(self, client: httpx.AsyncClient) -> None:
        bad = {"name": "sshd", "status": "enabled", "type": "service"}
        assert_error(
            await _report(client, [CHECKS[1], bad]), 400, "check 1: service: must be an object"
        )
        assert await _configuration(client) == []

    async def test_not_an_array(self, client: httpx.AsyncClient) -> None:
        assert_error(await _report(client, CHECKS[0]), 400, "the body must be an array of checks")

    async def test_keys_that_are_not_field_names(self, client: httpx.AsyncClient) -> None:
        odd = {**CHECKS[1], "log": {"$pattern": "x", "path.with.dots": "/tmp/a"}}
        assert (await _report(client, [odd])).status_code == 204
        assert await _configuration(client) == [odd]

    async def test_tenant_scoped(self, client: httpx.AsyncClient) -> None:
        assert (await _report(client, CHECKS, tenant="acme")).status_code == 204
        assert await _configuration(client, tenant="other") == []
        assert await _configuration(client, tenant="acme") == CHECKS
