"""Telemetry through the device and management APIs: reports, refusals, the latest sample,
downsampled ranges over an hour of per-second samples, and thresholds raising alerts."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.devicemonitor.conftest import (
    DEVICE_API,
    MANAGEMENT,
    RETENTION,
    START,
    device_headers,
    user_headers,
)
from tests.toolkit import ManualClock, assert_error

DEVICE = "5d4c3b2a-1908-4f7e-8d6c-5b4a39281706"
OTHER = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def _z(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def sample(at: datetime | None = START, *, cpu: float = 10.0, temp: float = 45.0) -> dict[str, Any]:
    """A full sample: two sensors, CPU per core, memory, host and services."""
    body: dict[str, Any] = {
        "hwmon": {
            "temperature": [{"name": "CPU", "value": temp, "unit": "Celsius"}],
            "voltage": [{"name": "12V", "value": 11.86, "unit": "Volt"}],
        },
        "cpu": {"total": cpu, "cores": [cpu - 1, cpu + 1]},
        "memory": {"used": 512 * 2**20, "total": 2**30},
        "host": {"os": "Debian 12", "kernel": "6.1.0-18-arm64", "uptime": 3600, "hostname": "gw-7"},
        "services": [{"name": "sshd", "active": True, "enabled": True}],
    }
    if at is not None:
        body["timestamp"] = _z(at)
    return body


async def _report(
    client: httpx.AsyncClient, body: Any, device: str = DEVICE, tenant: str = ""
) -> httpx.Response:
    return await client.post(
        f"{DEVICE_API}/telemetry", json=body, headers=device_headers(device, tenant)
    )


async def _latest(
    client: httpx.AsyncClient, device: str = DEVICE, tenant: str = ""
) -> httpx.Response:
    return await client.get(
        f"{MANAGEMENT}/devices/{device}/telemetry/latest", headers=user_headers(tenant)
    )


async def _range(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(
        f"{MANAGEMENT}/devices/{DEVICE}/telemetry", params=params, headers=user_headers()
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _alerts(client: httpx.AsyncClient, path: str = "alerts") -> list[dict[str, Any]]:
    response = await client.get(
        f"{MANAGEMENT}/devices/{DEVICE}/{path}",
        params={"sort_ascending": "true"} if path == "alerts" else {},
        headers=user_headers(),
    )
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


class TestReport:
    async def test_the_latest_sample(self, client: httpx.AsyncClient) -> None:
        assert (await _report(client, sample(START))).status_code == 204
        response = await _report(client, sample(START + timedelta(seconds=1), cpu=20))
        assert response.status_code == 204, response.text
        latest = await _latest(client)
        assert latest.status_code == 200
        assert latest.json() == {**sample(START + timedelta(seconds=1), cpu=20)}

    async def test_server_time_without_a_timestamp(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        assert (await _report(client, sample(None))).status_code == 204
        assert (await _latest(client)).json()["timestamp"] == _z(clock.now())

    async def test_none_yet(self, client: httpx.AsyncClient) -> None:
        assert_error(await _latest(client), 404, "the device has reported no telemetry")

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ("45", "must be a number, not str '45'"),
            (True, "must be a number, not bool True"),
            (None, "must be a number, not NoneType"),
            ([45], "must be a number, not list"),
        ],
    )
    async def test_non_numeric_reading(
        self, client: httpx.AsyncClient, value: Any, fragment: str
    ) -> None:
        body = sample()
        body["hwmon"]["temperature"][0]["value"] = value
        response = await _report(client, [sample(START - timedelta(seconds=1)), body])
        assert_error(response, 400, "sample 1: hwmon.temperature.0.value", fragment)
        assert (await _latest(client)).status_code == 404

    async def test_non_numeric_cpu(self, client: httpx.AsyncClient) -> None:
        body = sample()
        body["cpu"]["cores"] = [1.0, "busy"]
        assert_error(await _report(client, body), 400, "sample 0: cpu.cores.1", "must be a number")

    async def test_unknown_sensor_kind(self, client: httpx.AsyncClient) -> None:
        body = sample()
        body["hwmon"]["humidity"] = [{"name": "room", "value": 40, "unit": "%"}]
        assert_error(await _report(client, body), 400, "sample 0: hwmon.humidity")

    async def test_sensor_name(self, client: httpx.AsyncClient) -> None:
        body = sample()
        body["hwmon"]["temperature"][0]["name"] = "cpu.$die"
        assert_error(await _report(client, body), 400, "hwmon.temperature.0.name", "1-64 letters")

    async def test_timestamp_far_in_the_future(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        response = await _report(client, sample(clock.now() + timedelta(days=1)))
        assert_error(response, 400, "sample 0: timestamp", "is in the future")
        assert (await _latest(client)).status_code == 404

    async def test_oversized_batch(self, client: httpx.AsyncClient) -> None:
        batch = [{"cpu": {"total": 1}} for _ in range(601)]
        assert_error(await _report(client, batch), 400, "at most 600 samples per request")
        assert (await _latest(client)).status_code == 404

    async def test_another_devices_id(self, client: httpx.AsyncClient) -> None:
        response = await _report(client, {**sample(), "device_id": OTHER})
        assert_error(response, 403, OTHER, "is not the authenticated device")
        assert (await _latest(client, OTHER)).status_code == 404
        assert (await _latest(client)).status_code == 404

    async def test_user_token_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            f"{DEVICE_API}/telemetry", json=sample(), headers=user_headers()
        )
        assert_error(response, 401, "the token does not belong to a device")

    async def test_a_retried_report_counts_once(self, client: httpx.AsyncClient) -> None:
        batch = [sample(START + timedelta(seconds=i), cpu=i) for i in range(10)]
        assert (await _report(client, batch)).status_code == 204
        assert (await _report(client, batch)).status_code == 204
        found = await _range(
            client,
            metric="cpu/total",
            **{"from": _z(START), "to": _z(START + timedelta(minutes=1))},
        )
        assert [p["n"] for p in found["series"][0]["points"]] == [10]

    async def test_another_tenants_telemetry_invisible(self, client: httpx.AsyncClient) -> None:
        assert (await _report(client, sample(), tenant="acme")).status_code == 204
        assert_error(await _latest(client), 404, "the device has reported no telemetry")
        assert (await _latest(client, tenant="acme")).json() == sample()


def _cpu(i: int) -> float:
    return 50 + 40 * math.sin(i / 300)


def _temp(i: int) -> float:
    return 40 + (i % 97) / 4


class TestHourOfSamples:
    """A device reports every second for an hour (of the test's clock)."""

    @pytest.fixture
    async def hour(self, client: httpx.AsyncClient, clock: ManualClock) -> httpx.AsyncClient:
        for i in range(3600):
            body = sample(None, cpu=_cpu(i), temp=_temp(i))
            response = await _report(client, body)
            assert response.status_code == 204, response.text
            clock.advance(1)
        return client

    async def test_downsampled_range(
        self, hour: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        # (One test: an hour of reports takes a while.)
        # Storage: one document for the device's hour, expiring after the retention.
        docs = await mongo[db_name]["samples"].find({}).to_list()
        assert [(d["device_id"], d["hour"]) for d in docs] == [(DEVICE, START)]
        assert docs[0]["expire_at"] == START + timedelta(hours=1) + RETENTION
        assert len(docs[0]["metrics"]["cpu/total"]) == 60
        assert len(docs[0]["fives"]["cpu/total"]) == 12
        found = await _range(
            hour,
            metric=["cpu/total", "temperature/CPU"],
            bucket=300,
            **{"from": _z(START), "to": _z(START + timedelta(hours=1))},
        )
        assert found["from"] == _z(START)
        assert found["to"] == _z(START + timedelta(hours=1))
        assert found["bucket"] == 300
        cpu, temp = found["series"]
        assert (cpu["metric"], cpu["unit"]) == ("cpu/total", "%")
        assert (temp["metric"], temp["unit"]) == ("temperature/CPU", "Celsius")
        for series, f in ((cpu, _cpu), (temp, _temp)):
            assert len(series["points"]) == 12
            for k, point in enumerate(series["points"]):
                values = [f(i) for i in range(k * 300, (k + 1) * 300)]
                assert point["t"] == _z(START + timedelta(seconds=k * 300))
                assert point["n"] == 300
                assert point["min"] == pytest.approx(min(values))
                assert point["max"] == pytest.approx(max(values))
                assert point["avg"] == pytest.approx(sum(values) / 300)

        # A range inside the hour: buckets start at whole multiples of their size, so the
        # first and last are partly outside the range and count only what is inside.
        inner = await _range(
            hour,
            metric="cpu/total",
            bucket=600,
            **{"from": _z(START + timedelta(minutes=15)), "to": _z(START + timedelta(minutes=45))},
        )
        points = inner["series"][0]["points"]
        assert [p["t"] for p in points] == [
            _z(START + timedelta(minutes=10)),
            _z(START + timedelta(minutes=20)),
            _z(START + timedelta(minutes=30)),
            _z(START + timedelta(minutes=40)),
        ]
        assert [p["n"] for p in points] == [300, 600, 600, 300]

        # Bounds off the five-minute grid are read per minute: still exact.
        odd = await _range(
            hour,
            metric="cpu/total",
            bucket=300,
            **{"from": _z(START + timedelta(minutes=13)), "to": _z(START + timedelta(minutes=27))},
        )
        points = odd["series"][0]["points"]
        assert [p["n"] for p in points] == [120, 300, 300, 120]
        values = [_cpu(i) for i in range(13 * 60, 15 * 60)]
        assert points[0]["min"] == pytest.approx(min(values))
        assert points[0]["avg"] == pytest.approx(sum(values) / len(values))

        # The defaults: the last hour, in about 300 buckets (here of a minute), every metric
        # the device has.
        found = await _range(hour)
        assert found["bucket"] == 60
        assert found["to"] == _z(START + timedelta(hours=1))
        metrics = [s["metric"] for s in found["series"]]
        assert metrics == sorted(
            [
                "cpu/0",
                "cpu/1",
                "cpu/total",
                "memory/total",
                "memory/used",
                "temperature/CPU",
                "voltage/12V",
            ]
        )
        assert all(len(s["points"]) == 60 for s in found["series"])
        assert all(p["n"] == 60 for s in found["series"] for p in s["points"])


class TestStorage:
    async def test_expiry_index(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        assert (await _report(client, sample())).status_code == 204
        indexes = await mongo[db_name]["samples"].index_information()
        assert indexes["expire_at"]["expireAfterSeconds"] == 0
        assert indexes["tenant_device_hour"]["unique"] is True

    async def test_two_hours_two_documents(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        batch = [sample(START - timedelta(minutes=1)), sample(START + timedelta(minutes=1))]
        assert (await _report(client, batch)).status_code == 204
        docs = await mongo[db_name]["samples"].find({}).sort("hour", 1).to_list()
        assert [d["hour"] for d in docs] == [START - timedelta(hours=1), START]
        assert [list(d["metrics"]["cpu/total"]) for d in docs] == [["59"], ["01"]]


class TestRangeRefusals:
    @pytest.mark.parametrize(
        ("params", "fragment"),
        [
            ({"bucket": 90}, "bucket: 90 s is not a whole number of minutes"),
            ({"bucket": 0}, "is not a whole number of minutes"),
            ({"bucket": 60, "from": "2026-01-01T00:00:00Z"}, "at most 10000"),
            ({"metric": "disk/sda"}, "unknown metric 'disk/sda'"),
            ({"metric": "cpu/*"}, "name one metric, not a family"),
            ({"metric": [f"cpu/{i}" for i in range(101)]}, "at most 100 a query, not 101"),
            (
                {"from": "2026-03-01T13:00:00Z", "to": "2026-03-01T12:00:00Z"},
                "from must be before to",
            ),
            ({"from": "noon"}, "from"),
            ({"to": "2026-03-01T12:00:00"}, "to"),
        ],
    )
    async def test_refused(
        self, client: httpx.AsyncClient, params: dict[str, Any], fragment: str
    ) -> None:
        response = await client.get(
            f"{MANAGEMENT}/devices/{DEVICE}/telemetry", params=params, headers=user_headers()
        )
        assert_error(response, 400, fragment)

    async def test_nothing_reported(self, client: httpx.AsyncClient) -> None:
        found = await _range(client, metric="cpu/total")
        assert found["series"] == [{"metric": "cpu/total", "unit": "", "points": []}]


class TestThresholds:
    async def _set(self, client: httpx.AsyncClient, body: Any) -> httpx.Response:
        return await client.put(
            f"{MANAGEMENT}/telemetry/thresholds", json=body, headers=user_headers()
        )

    async def test_set_and_read(self, client: httpx.AsyncClient) -> None:
        rules = {"temperature/CPU": {"max": 85}, "voltage/*": {"min": 11.5, "max": 12.5}}
        assert (await self._set(client, rules)).status_code == 204
        response = await client.get(f"{MANAGEMENT}/telemetry/thresholds", headers=user_headers())
        assert response.status_code == 200
        assert response.json() == {
            "temperature/CPU": {"min": None, "max": 85.0},
            "voltage/*": {"min": 11.5, "max": 12.5},
        }

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({"temperature/CPU": {"min": 90, "max": 80}}, "min 90.0 must be below max 80.0"),
            ({"temperature/CPU": {}}, "give min, max or both"),
            ({"temperature/CPU": {"max": "hot"}}, "must be a number"),
            ({"disk/sda": {"max": 1}}, "unknown metric 'disk/sda'"),
            ({"temperature/CPU": {"max": 1, "maximum": 2}}, "maximum"),
            ([{"max": 1}], "the body must be an object"),
        ],
    )
    async def test_refused(self, client: httpx.AsyncClient, body: Any, fragment: str) -> None:
        assert (await self._set(client, {"cpu/total": {"max": 99}})).status_code == 204
        assert_error(await self._set(client, body), 400, fragment)
        response = await client.get(f"{MANAGEMENT}/telemetry/thresholds", headers=user_headers())
        assert response.json() == {"cpu/total": {"min": None, "max": 99.0}}

    async def test_a_crossing_raises_one_alert_and_its_ok(self, client: httpx.AsyncClient) -> None:
        assert (await self._set(client, {"temperature/*": {"max": 80}})).status_code == 204
        temps = [70, 85, 90, 95, 81, 75, 76, 60]
        for i, temp in enumerate(temps):
            at = START + timedelta(seconds=i)
            assert (await _report(client, sample(at, temp=temp))).status_code == 204
            if i == 3:
                open_ = await _alerts(client, "alerts/latest")
                assert [(a["name"], a["level"]) for a in open_] == [("temperature/CPU", "CRITICAL")]
        alerts = await _alerts(client)
        assert [(a["name"], a["level"], a["timestamp"]) for a in alerts] == [
            ("temperature/CPU", "CRITICAL", _z(START + timedelta(seconds=1))),
            ("temperature/CPU", "OK", _z(START + timedelta(seconds=5))),
        ]
        assert alerts[0]["subject"] == {
            "name": "temperature/CPU",
            "type": "threshold",
            "status": "out of range",
            "details": {"description": "temperature/CPU read 85 Celsius, above the maximum 80"},
        }
        assert await _alerts(client, "alerts/latest") == []

    async def test_within_one_batch(self, client: httpx.AsyncClient) -> None:
        assert (await self._set(client, {"cpu/total": {"max": 90}})).status_code == 204
        batch = [
            sample(START + timedelta(seconds=i), cpu=c) for i, c in enumerate([95, 96, 50, 97])
        ]
        assert (await _report(client, batch)).status_code == 204
        alerts = await _alerts(client)
        assert [(a["name"], a["level"]) for a in alerts] == [
            ("cpu/total", "CRITICAL"),
            ("cpu/total", "OK"),
            ("cpu/total", "CRITICAL"),
        ]
        assert [a["name"] for a in await _alerts(client, "alerts/latest")] == ["cpu/total"]

    async def test_a_threshold_removed_closes_its_alert(self, client: httpx.AsyncClient) -> None:
        assert (await self._set(client, {"cpu/total": {"max": 90}})).status_code == 204
        assert (await _report(client, sample(START, cpu=95))).status_code == 204
        assert (await self._set(client, {})).status_code == 204
        assert (
            await _report(client, sample(START + timedelta(seconds=1), cpu=95))
        ).status_code == 204
        assert [a["level"] for a in await _alerts(client)] == ["CRITICAL", "OK"]
        assert await _alerts(client, "alerts/latest") == []
