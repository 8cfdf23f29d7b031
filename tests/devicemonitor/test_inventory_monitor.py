"""Alerts reach inventory: the device's `monitor` attributes follow its open issues."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from tests.devicemonitor.conftest import DEVICE_API, START, alert, device_headers, user_headers
from tests.toolkit import eventually

DEVICE = "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918"


async def _monitor_attributes(inventory: httpx.AsyncClient) -> dict[str, Any] | None:
    response = await inventory.get(
        f"/api/management/v1/inventory/devices/{DEVICE}", headers=user_headers()
    )
    if response.status_code != 200:
        return None
    return {a["name"]: a["value"] for a in response.json()["attributes"] if a["scope"] == "monitor"}


async def _post(monitor: httpx.AsyncClient, body: Any) -> None:
    response = await monitor.post(f"{DEVICE_API}/alert", json=body, headers=device_headers(DEVICE))
    assert response.status_code == 204, response.text


class TestMonitorScope:
    async def test_open_alerts_set_and_clear(
        self, peered: tuple[httpx.AsyncClient, httpx.AsyncClient]
    ) -> None:
        monitor, inventory = peered
        await _post(monitor, [alert("sshd"), alert("nginx")])

        async def two_open() -> bool:
            return await _monitor_attributes(inventory) == {"alerts": True, "alert_count": 2}

        await eventually(two_open, what="inventory shows two open alerts")
        later = START + timedelta(minutes=1)
        await _post(monitor, [alert("sshd", "OK", at=later), alert("nginx", "OK", at=later)])

        async def none_open() -> bool:
            return await _monitor_attributes(inventory) == {"alerts": False, "alert_count": 0}

        await eventually(none_open, what="inventory shows no open alert")

    async def test_the_ui_finds_devices_with_alerts(
        self, peered: tuple[httpx.AsyncClient, httpx.AsyncClient]
    ) -> None:
        monitor, inventory = peered
        await _post(monitor, [alert("sshd")])

        async def found() -> list[Any]:
            response = await inventory.post(
                "/api/management/v2/inventory/filters/search",
                json={
                    "filters": [
                        {"scope": "monitor", "attribute": "alerts", "type": "$eq", "value": True}
                    ]
                },
                headers=user_headers(),
            )
            assert response.status_code == 200, response.text
            ids: list[Any] = [d["id"] for d in response.json()]
            return ids

        assert await eventually(found, what="the search finds the device") == [DEVICE]
