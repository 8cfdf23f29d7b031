"""A report is all or nothing: cut between its writes, it leaves nothing, and its retry
counts once (the cut stands for a process dying there)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from common.core.mongo import Document
from services.devicemonitor.config import Settings
from services.devicemonitor.main import create_app
from tests.conftest import ClientFactory
from tests.devicemonitor.conftest import (
    DEVICE_API,
    MANAGEMENT,
    RETENTION,
    START,
    alert,
    device_headers,
    user_headers,
)
from tests.toolkit import ManualClock
from tests.toolkit.database import failing_commands

DEVICE = "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"
_COLLECTIONS = ("alerts", "latest_alerts", "samples", "telemetry", "outbox")


@pytest.fixture
async def client(
    mongo_url: str, db_name: str, clock: ManualClock, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """devicemonitor with its peers deployed but away: effects stay in the outbox."""
    settings = Settings(
        mongo_url=mongo_url,
        mongo_db=db_name,
        dev_mode=True,
        telemetry_retention=RETENTION,
        inventory_addr="http://127.0.0.1:9",
        auditlogs_addr="http://127.0.0.1:9",
    )
    async with asgi_client(create_app(settings, clock=clock.now)) as c:
        yield c


async def _counts(mongo: AsyncMongoClient[Document], db_name: str) -> dict[str, int]:
    db = mongo[db_name]
    return {name: await db[name].count_documents({}) for name in _COLLECTIONS}


def _hot(second: int) -> dict[str, object]:
    at = START + timedelta(seconds=second)
    return {"timestamp": at.isoformat().replace("+00:00", "Z"), "cpu": {"total": 99.0}}


class TestTelemetryReport:
    async def test_cut_before_the_effects(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        rules = {"cpu/total": {"max": 90}}
        put = await client.put(
            f"{MANAGEMENT}/telemetry/thresholds", json=rules, headers=user_headers()
        )
        assert put.status_code == 204
        # The report's writes: the hour, the device's telemetry, the alert (insert), the
        # latest alert, then the effects (the second insert): refused.
        async with failing_commands(mongo, ["insert"], skip=1):
            with pytest.raises(OperationFailure, match="failCommand"):
                await client.post(
                    f"{DEVICE_API}/telemetry", json=_hot(0), headers=device_headers(DEVICE)
                )
        assert await _counts(mongo, db_name) == dict.fromkeys(_COLLECTIONS, 0)

        retried = await client.post(
            f"{DEVICE_API}/telemetry", json=_hot(0), headers=device_headers(DEVICE)
        )
        assert retried.status_code == 204, retried.text
        assert await _counts(mongo, db_name) == {
            "alerts": 1,
            "latest_alerts": 1,
            "samples": 1,
            "telemetry": 1,
            "outbox": 2,  # inventory's refresh and the audit event
        }
        [doc] = await mongo[db_name]["samples"].find({}).to_list()
        assert doc["metrics"]["cpu/total"]["00"]["n"] == 1


class TestAlertBatch:
    async def test_cut_before_the_latest_alert(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        async with failing_commands(mongo, ["update"]):
            with pytest.raises(OperationFailure, match="failCommand"):
                await client.post(
                    f"{DEVICE_API}/alert",
                    json=[alert("a"), alert("b")],
                    headers=device_headers(DEVICE),
                )
        assert await _counts(mongo, db_name) == dict.fromkeys(_COLLECTIONS, 0)
        listed = await client.get(f"{MANAGEMENT}/devices/{DEVICE}/alerts", headers=user_headers())
        assert listed.json() == []
        assert listed.headers["X-Total-Count"] == "0"
