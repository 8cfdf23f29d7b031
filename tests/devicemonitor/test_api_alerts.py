"""Alerts through the device and management APIs: recording, refusals, listing, open issues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.devicemonitor.config import Settings
from services.devicemonitor.main import create_app
from tests.conftest import ClientFactory
from tests.devicemonitor.conftest import (
    DEVICE_API,
    INTERNAL,
    MANAGEMENT,
    START,
    alert,
    device_headers,
    outbox,
    user_headers,
)
from tests.toolkit import ManualClock, assert_error

DEVICE = "0b6f4a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c"
OTHER = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"


async def _post(
    client: httpx.AsyncClient, body: Any, device: str = DEVICE, tenant: str = ""
) -> httpx.Response:
    return await client.post(
        f"{DEVICE_API}/alert", json=body, headers=device_headers(device, tenant)
    )


async def _alerts(
    client: httpx.AsyncClient, device: str = DEVICE, tenant: str = "", **params: Any
) -> tuple[list[dict[str, Any]], httpx.Response]:
    response = await client.get(
        f"{MANAGEMENT}/devices/{device}/alerts", params=params, headers=user_headers(tenant)
    )
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body, response


async def _latest(client: httpx.AsyncClient, device: str = DEVICE) -> list[dict[str, Any]]:
    response = await client.get(
        f"{MANAGEMENT}/devices/{device}/alerts/latest", headers=user_headers()
    )
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


class TestPostAlert:
    async def test_a_batch_is_recorded(self, client: httpx.AsyncClient) -> None:
        batch = [alert("sshd", at=START), alert("nginx", at=START + timedelta(seconds=5))]
        response = await _post(client, batch)
        assert response.status_code == 204, response.text
        assert response.content == b""
        alerts, listing = await _alerts(client)
        assert listing.headers["X-Total-Count"] == "2"
        assert [a["name"] for a in alerts] == ["nginx", "sshd"]
        first = alerts[1]
        assert set(first) == {"id", "name", "device_id", "level", "subject", "timestamp"}
        assert first["device_id"] == DEVICE
        assert first["level"] == "CRITICAL"
        assert first["timestamp"] == "2026-03-01T12:00:00Z"
        assert first["subject"] == {
            "name": "sshd",
            "type": "systemd",
            "status": "not-running",
            "details": {"description": "sshd is not-running"},
        }

    async def test_one_alert_as_an_object(self, client: httpx.AsyncClient) -> None:
        response = await _post(client, alert("crond"))
        assert response.status_code == 204, response.text
        alerts, _ = await _alerts(client)
        assert [a["name"] for a in alerts] == ["crond"]

    async def test_log_lines_kept(self, client: httpx.AsyncClient) -> None:
        details = {
            "lines_before": [{"line_number": 9, "data": "starting"}],
            "line_matching": {"line_number": 10, "data": "ERROR: disk full"},
            "lines_after": [],
        }
        body = alert("syslog")
        body["subject"] = {"name": "syslog", "type": "log", "status": "match", "details": details}
        assert (await _post(client, body)).status_code == 204
        alerts, _ = await _alerts(client)
        assert alerts[0]["subject"]["details"] == details

    async def test_name_defaults_to_the_subject(self, client: httpx.AsyncClient) -> None:
        body = alert("sshd")
        del body["name"]
        assert (await _post(client, body)).status_code == 204
        alerts, _ = await _alerts(client)
        assert alerts[0]["name"] == "sshd"

    async def test_unknown_level(self, client: httpx.AsyncClient) -> None:
        response = await _post(client, [alert(level="WARNING")])
        assert_error(response, 400, "alert 0", "level", "unknown level 'WARNING'")
        assert (await _alerts(client))[0] == []

    async def test_all_or_nothing(self, client: httpx.AsyncClient) -> None:
        bad = alert("c")
        del bad["subject"]
        response = await _post(client, [alert("a"), alert("b"), bad])
        assert_error(response, 400, "alert 2", "subject")
        assert (await _alerts(client))[0] == []

    async def test_oversized_batch(self, client: httpx.AsyncClient) -> None:
        response = await _post(client, [alert(f"s{i}") for i in range(101)])
        assert_error(response, 400, "at most 100 alerts per request, this one has 101")
        assert (await _alerts(client))[0] == []

    async def test_empty_batch(self, client: httpx.AsyncClient) -> None:
        assert_error(await _post(client, []), 400, "the array holds no alerts")

    async def test_not_an_alert(self, client: httpx.AsyncClient) -> None:
        assert_error(await _post(client, "CRITICAL"), 400, "an array of them")

    async def test_malformed_json(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            f"{DEVICE_API}/alert",
            content=b"[{",
            headers={**device_headers(DEVICE), "Content-Type": "application/json"},
        )
        assert_error(response, 400, "failed to decode request body")
        assert (await _alerts(client))[0] == []

    async def test_timestamp_far_in_the_future(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        response = await _post(client, [alert(at=clock.now() + timedelta(hours=1))])
        assert_error(response, 400, "alert 0: timestamp", "is in the future")
        assert (await _alerts(client))[0] == []
        # A clock a little ahead is a device's clock drifting: accepted.
        assert (
            await _post(client, [alert(at=clock.now() + timedelta(minutes=5))])
        ).status_code == 204

    async def test_timestamp_without_zone(self, client: httpx.AsyncClient) -> None:
        body = alert()
        body["timestamp"] = "2026-03-01T12:00:00"
        assert_error(await _post(client, body), 400, "alert 0: timestamp", "timezone")

    async def test_another_devices_id(self, client: httpx.AsyncClient) -> None:
        response = await _post(client, [alert(device_id=OTHER)])
        assert_error(response, 403, OTHER, "is not the authenticated device")
        assert (await _alerts(client, OTHER))[0] == []
        assert (await _alerts(client))[0] == []

    async def test_own_device_id_accepted(self, client: httpx.AsyncClient) -> None:
        assert (await _post(client, [alert(device_id=DEVICE)])).status_code == 204
        assert len((await _alerts(client))[0]) == 1

    async def test_user_token_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.post(f"{DEVICE_API}/alert", json=alert(), headers=user_headers())
        assert_error(response, 401, "the token does not belong to a device")
        assert (await _alerts(client))[0] == []


@pytest.fixture
async def with_peers(
    mongo_url: str, db_name: str, clock: ManualClock, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """devicemonitor whose peers are deployed but unreachable: effects stay queued."""
    settings = Settings(
        mongo_url=mongo_url,
        mongo_db=db_name,
        dev_mode=True,
        inventory_addr="http://127.0.0.1:9",
        auditlogs_addr="http://127.0.0.1:9",
    )
    async with asgi_client(create_app(settings, clock=clock.now)) as c:
        yield c


class TestAlertEffects:
    async def test_queued_with_the_alerts(
        self, with_peers: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        batch = [alert("sshd", "CRITICAL"), alert("nginx", "OK")]
        assert (await _post(with_peers, batch, tenant="acme")).status_code == 204
        effects = await outbox(mongo, db_name)
        assert [(e["peer"], e["method"], e["path"]) for e in effects] == [
            (
                "inventory",
                "POST",
                f"/api/internal/v1/inventory/tenants/acme/devices/{DEVICE}/reindex"
                "?service=devicemonitor",
            ),
            ("auditlogs", "POST", "/api/internal/v1/auditlogs/tenants/acme/logs"),
            ("auditlogs", "POST", "/api/internal/v1/auditlogs/tenants/acme/logs"),
        ]
        audit = effects[1]["body"]
        assert audit["actor"] == {"id": DEVICE, "type": "device"}
        assert audit["object"] == {"id": DEVICE, "type": "device"}
        assert audit["action"] == "alert"
        assert audit["change"] == "CRITICAL: sshd"
        assert audit["time"] == "2026-03-01T12:00:00.000Z"
        assert audit["meta"]["level"] == ["CRITICAL"]

    async def test_nothing_queued_for_a_refused_batch(
        self, with_peers: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        response = await _post(with_peers, [alert(), alert(level="bad")])
        assert_error(response, 400, "alert 1")
        assert await outbox(mongo, db_name) == []

    async def test_none_kept_for_peers_not_deployed(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        assert (await _post(client, [alert()])).status_code == 204
        assert len((await _alerts(client))[0]) == 1
        assert await outbox(mongo, db_name) == []


class TestListAlerts:
    async def _three(self, client: httpx.AsyncClient) -> None:
        batch = [alert(f"s{i}", at=START + timedelta(minutes=i)) for i in range(3)]
        assert (await _post(client, batch)).status_code == 204

    async def test_pages(self, client: httpx.AsyncClient) -> None:
        await self._three(client)
        alerts, response = await _alerts(client, page=2, per_page=2)
        assert [a["name"] for a in alerts] == ["s0"]
        assert response.headers["X-Total-Count"] == "3"
        assert 'rel="prev"' in response.headers["Link"]
        assert 'rel="next"' not in response.headers["Link"]

    async def test_oldest_first(self, client: httpx.AsyncClient) -> None:
        await self._three(client)
        alerts, _ = await _alerts(client, sort_ascending="true")
        assert [a["name"] for a in alerts] == ["s0", "s1", "s2"]

    async def test_time_range(self, client: httpx.AsyncClient) -> None:
        await self._three(client)
        alerts, response = await _alerts(
            client,
            issued_after="2026-03-01T12:01:00Z",
            issued_before="2026-03-01T12:02:00Z",
        )
        assert [a["name"] for a in alerts] == ["s1"]
        assert response.headers["X-Total-Count"] == "1"

    async def test_bad_time(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            f"{MANAGEMENT}/devices/{DEVICE}/alerts",
            params={"issued_after": "yesterday"},
            headers=user_headers(),
        )
        assert_error(response, 400, "issued_after")

    async def test_empty_range(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            f"{MANAGEMENT}/devices/{DEVICE}/alerts",
            params={
                "issued_after": "2026-03-02T00:00:00Z",
                "issued_before": "2026-03-01T00:00:00Z",
            },
            headers=user_headers(),
        )
        assert_error(response, 400, "issued_after must be before issued_before")

    async def test_bad_page(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            f"{MANAGEMENT}/devices/{DEVICE}/alerts",
            params={"per_page": "0"},
            headers=user_headers(),
        )
        assert_error(response, 400, "invalid per_page query: must be at least 1")

    async def test_another_tenants_alerts_invisible(self, client: httpx.AsyncClient) -> None:
        assert (await _post(client, [alert()], tenant="acme")).status_code == 204
        assert (await _alerts(client, tenant="other"))[0] == []
        assert len((await _alerts(client, tenant="acme"))[0]) == 1

    async def test_device_token_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            f"{MANAGEMENT}/devices/{DEVICE}/alerts", headers=device_headers(DEVICE)
        )
        assert_error(response, 401, "the token does not belong to a user")


class TestLatestAlerts:
    async def test_ok_closes_an_issue(self, client: httpx.AsyncClient) -> None:
        assert (await _post(client, [alert("sshd"), alert("nginx")])).status_code == 204
        assert {a["name"] for a in await _latest(client)} == {"sshd", "nginx"}
        later = START + timedelta(minutes=1)
        assert (await _post(client, [alert("sshd", "OK", at=later)])).status_code == 204
        latest = await _latest(client)
        assert [(a["name"], a["level"]) for a in latest] == [("nginx", "CRITICAL")]

    async def test_a_late_report_changes_nothing(self, client: httpx.AsyncClient) -> None:
        assert (await _post(client, [alert("sshd", "OK", at=START)])).status_code == 204
        earlier = START - timedelta(minutes=1)
        assert (await _post(client, [alert("sshd", "CRITICAL", at=earlier)])).status_code == 204
        assert await _latest(client) == []
        assert len((await _alerts(client))[0]) == 2

    async def test_within_one_batch_the_newest_counts(self, client: httpx.AsyncClient) -> None:
        batch = [
            alert("sshd", "OK", at=START + timedelta(seconds=2)),
            alert("sshd", "CRITICAL", at=START),
        ]
        assert (await _post(client, batch)).status_code == 204
        assert await _latest(client) == []

    async def test_internal_view(self, client: httpx.AsyncClient) -> None:
        assert (await _post(client, [alert("sshd")], tenant="acme")).status_code == 204
        response = await client.get(f"{INTERNAL}/tenants/acme/devices/{DEVICE}/alerts/latest")
        assert response.status_code == 200
        assert [a["name"] for a in response.json()] == ["sshd"]
        empty = await client.get(f"{INTERNAL}/tenants//devices/{DEVICE}/alerts/latest")
        assert empty.json() == []


class TestDeleteDevice:
    async def test_forgets_alerts_and_configuration(self, client: httpx.AsyncClient) -> None:
        assert (await _post(client, [alert()], tenant="acme")).status_code == 204
        assert (await _post(client, [alert()], device=OTHER, tenant="acme")).status_code == 204
        response = await client.delete(f"{INTERNAL}/tenants/acme/devices/{DEVICE}")
        assert response.status_code == 204
        assert (await _alerts(client, tenant="acme"))[0] == []
        assert len((await _alerts(client, OTHER, tenant="acme"))[0]) == 1
