"""The telemetry stream: a device's new samples as server-sent events, over a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.devicemonitor.config import Settings
from services.devicemonitor.main import create_app
from tests.devicemonitor.conftest import (
    DEVICE_API,
    MANAGEMENT,
    RETENTION,
    START,
    device_headers,
    user_headers,
)
from tests.toolkit import LiveServer, ManualClock, assert_error

DEVICE = "2f1e0d9c-8b7a-4695-a4b3-c2d1e0f9a8b7"


@pytest.fixture
async def server(mongo_url: str, db_name: str, clock: ManualClock) -> AsyncIterator[str]:
    """devicemonitor on a loopback port, its streams polling often."""
    settings = Settings(
        mongo_url=mongo_url,
        mongo_db=db_name,
        dev_mode=True,
        telemetry_retention=RETENTION,
        stream_poll_interval=0.02,
        stream_keepalive=0.1,
    )
    async with LiveServer(create_app(settings, clock=clock.now), lifespan="on") as live:
        yield live.url


async def _report(client: httpx.AsyncClient, second: int) -> None:
    body = {
        "timestamp": (START + timedelta(seconds=second)).isoformat().replace("+00:00", "Z"),
        "cpu": {"total": float(second)},
    }
    response = await client.post(
        f"{DEVICE_API}/telemetry", json=body, headers=device_headers(DEVICE)
    )
    assert response.status_code == 204, response.text


async def _events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """Read `count` sample events (and whatever comments come between)."""
    events: list[dict[str, Any]] = []
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith(":") or line.startswith("retry:"):
            continue
        if line:
            field, _, value = line.partition(": ")
            event[field] = value
            continue
        if event:
            events.append({**event, "data": json.loads(event["data"])})
            event = {}
            if len(events) == count:
                return events
    raise AssertionError(f"the stream ended after {len(events)} events")


class TestStream:
    async def test_new_samples_arrive(self, server: str) -> None:
        async with httpx.AsyncClient(base_url=server, timeout=10) as client:
            await _report(client, 0)  # before the stream opens: not sent
            async with client.stream(
                "GET", f"{MANAGEMENT}/devices/{DEVICE}/telemetry/stream", headers=user_headers()
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for second in (1, 2, 3):
                    await _report(client, second)
                events = await _events(response, 3)
        assert [(e["event"], e["id"]) for e in events] == [
            ("sample", "2"),
            ("sample", "3"),
            ("sample", "4"),
        ]
        assert [e["data"]["cpu"]["total"] for e in events] == [1.0, 2.0, 3.0]
        assert events[0]["data"]["timestamp"] == "2026-03-01T12:00:01Z"

    async def test_resume_after_the_last_event(self, server: str) -> None:
        async with httpx.AsyncClient(base_url=server, timeout=10) as client:
            for second in range(4):
                await _report(client, second)
            headers = {**user_headers(), "Last-Event-ID": "2"}
            async with client.stream(
                "GET", f"{MANAGEMENT}/devices/{DEVICE}/telemetry/stream", headers=headers
            ) as response:
                events = await _events(response, 2)
        assert [e["id"] for e in events] == ["3", "4"]
        assert [e["data"]["cpu"]["total"] for e in events] == [2.0, 3.0]

    async def test_another_tenants_device_is_silent(self, server: str) -> None:
        async with httpx.AsyncClient(base_url=server, timeout=10) as client:
            await _report(client, 0)
            headers = {**user_headers("other"), "Last-Event-ID": "0"}
            async with client.stream(
                "GET", f"{MANAGEMENT}/devices/{DEVICE}/telemetry/stream", headers=headers
            ) as response:
                lines = []
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line.startswith(": keep-alive"):
                        break
        assert not any(line.startswith("event:") for line in lines)

    async def test_bad_last_event_id(self, server: str) -> None:
        async with httpx.AsyncClient(base_url=server, timeout=10) as client:
            response = await client.get(
                f"{MANAGEMENT}/devices/{DEVICE}/telemetry/stream",
                headers={**user_headers(), "Last-Event-ID": "yesterday"},
            )
        assert_error(response, 400, "Last-Event-ID: 'yesterday' is not a sample sequence")
