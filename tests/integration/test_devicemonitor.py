"""Device monitoring through the gateway: a device's alerts, the Monitoring tab's calls, the
device list's issue filter in inventory, and telemetry (a stream included)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import pytest

from common.localstack.launcher import Stack
from tests.e2e.api import ManagementApi, RawDevice, accepted_device
from tests.toolkit import wait_until

pytestmark = pytest.mark.timeout(120)

MONITOR: Final = "/api/management/v1/devicemonitor/devices"
SEARCH: Final = "/api/management/v2/inventory/filters/search"
AUDIT: Final = "/api/management/v1/auditlogs/logs"


@pytest.fixture
def device(stack: Stack, api: ManagementApi) -> Iterator[tuple[RawDevice, str]]:
    """An accepted device holding a token, and its id."""
    with accepted_device(api, stack.url, "monitor") as found:
        yield found


def _alert(level: str) -> dict[str, Any]:
    return {
        "name": "sshd",
        "level": level,
        "subject": {"name": "sshd", "type": "systemd", "status": level.lower()},
        "timestamp": datetime.now(UTC).isoformat(),
    }


def _with_issues(api: ManagementApi) -> list[str]:
    """What the device list's "Monitoring alert" filter finds."""
    filters = [{"scope": "monitor", "attribute": "alerts", "type": "$eq", "value": True}]
    response = api.http.post(SEARCH, json={"page": 1, "per_page": 500, "filters": filters})
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()]


class TestDeviceAlerts:
    def test_alert_to_issue_and_back(
        self, api: ManagementApi, device: tuple[RawDevice, str]
    ) -> None:
        raw, device_id = device
        headers = {"Authorization": f"Bearer {raw.token}"}
        sent = raw.http.post(
            "/api/devices/v1/devicemonitor/alert", json=[_alert("CRITICAL")], headers=headers
        )
        assert sent.status_code == 204, sent.text

        # The Monitoring tab: history and open issues.
        history = api.http.get(
            f"{MONITOR}/{device_id}/alerts?page=1&per_page=20&sort_ascending=false"
        )
        assert history.status_code == 200, history.text
        assert history.headers["X-Total-Count"] == "1"
        assert [a["level"] for a in history.json()] == ["CRITICAL"]
        latest = api.http.get(f"{MONITOR}/{device_id}/alerts/latest")
        assert [a["name"] for a in latest.json()] == ["sshd"]
        wait_until(
            lambda: device_id in _with_issues(api), what="inventory lists the device's issue"
        )

        cleared = raw.http.post(
            "/api/devices/v1/devicemonitor/alert", json=_alert("OK"), headers=headers
        )
        assert cleared.status_code == 204, cleared.text
        assert api.http.get(f"{MONITOR}/{device_id}/alerts/latest").json() == []
        wait_until(lambda: device_id not in _with_issues(api), what="inventory clears the issue")

    def test_a_user_cannot_post_alerts(self, api: ManagementApi) -> None:
        response = api.http.post("/api/devices/v1/devicemonitor/alert", json=[_alert("OK")])
        assert response.status_code == 401
        assert response.json()["error"] == "not a device token"


class TestTelemetry:
    def test_report_read_and_stream_through_the_gateway(
        self, stack: Stack, api: ManagementApi, device: tuple[RawDevice, str]
    ) -> None:
        raw, device_id = device
        headers = {"Authorization": f"Bearer {raw.token}"}
        base = f"{MONITOR}/{device_id}/telemetry"
        with httpx.Client(base_url=stack.url, headers=api.http.headers, timeout=30) as viewer:
            with viewer.stream("GET", f"{base}/stream") as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                sent = raw.http.post(
                    "/api/devices/v1/devicemonitor/telemetry",
                    json={"cpu": {"total": 42.5}, "memory": {"used": 1, "total": 2}},
                    headers=headers,
                )
                assert sent.status_code == 204, sent.text
                lines = stream.iter_lines()
                event = next(line for line in lines if line.startswith("event:"))
                data = next(line for line in lines if line.startswith("data:"))
        assert event == "event: sample"
        assert json.loads(data.removeprefix("data: "))["cpu"] == {"total": 42.5}
        latest = api.http.get(f"{base}/latest")
        assert latest.status_code == 200, latest.text
        assert latest.json()["memory"] == {"used": 1.0, "total": 2.0}
        series = api.http.get(base, params={"metric": "cpu/total"})
        assert series.status_code == 200, series.text
        points = series.json()["series"][0]["points"]
        assert [(p["n"], p["max"]) for p in points] == [(1, 42.5)]


class TestDecommission:
    def test_alerts_and_telemetry_go_with_the_device(
        self, api: ManagementApi, device: tuple[RawDevice, str]
    ) -> None:
        raw, device_id = device
        headers = {"Authorization": f"Bearer {raw.token}"}
        alerted = raw.http.post(
            "/api/devices/v1/devicemonitor/alert", json=_alert("CRITICAL"), headers=headers
        )
        assert alerted.status_code == 204, alerted.text
        reported = raw.http.post(
            "/api/devices/v1/devicemonitor/telemetry", json={"cpu": {"total": 1}}, headers=headers
        )
        assert reported.status_code == 204, reported.text
        assert api.decommission(device_id).status_code == 204

        def forgotten() -> bool:
            alerts = api.http.get(f"{MONITOR}/{device_id}/alerts")
            latest = api.http.get(f"{MONITOR}/{device_id}/telemetry/latest")
            return alerts.json() == [] and latest.status_code == 404

        wait_until(forgotten, what="devicemonitor forgets the decommissioned device")
        latest = api.http.get(f"{MONITOR}/{device_id}/telemetry/latest")
        assert latest.json()["error"] == "the device has reported no telemetry"
