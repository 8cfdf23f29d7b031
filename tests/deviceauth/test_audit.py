"""An operator's changes to devices reach a real auditlogs service as audit events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from services.auditlogs.config import Settings as AuditlogsSettings
from services.auditlogs.main import create_app as create_auditlogs_app
from services.deviceauth.main import create_app
from tests.conftest import ClientFactory
from tests.deviceauth.conftest import MGMT, USER, FakeDevice, PrivateKey, register, set_status
from tests.toolkit import LiveServer, eventually

LOGS = "/api/management/v1/auditlogs/logs"


@pytest.fixture
async def auditlogs(mongo_url: str, db_name: str) -> AsyncIterator[LiveServer]:
    """auditlogs served for real on its own database (without useradm: no emails)."""
    settings = AuditlogsSettings(mongo_url=mongo_url, mongo_db=f"{db_name}_audit", dev_mode=True)
    async with LiveServer(create_auditlogs_app(settings), lifespan="on") as server:
        yield server


async def _trail(server: LiveServer) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(LOGS, params={"sort": "asc"}, headers=USER)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


class TestAuditEvents:
    async def test_each_change_by_an_operator_is_one_event(
        self,
        auditlogs: LiveServer,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device_key: Callable[[str], PrivateKey],
    ) -> None:
        first = FakeDevice(device_key("p256"), {"mac": "aa"})
        second = FakeDevice(device_key("ed25519"), {"mac": "bb"})
        settings = make_settings(auditlogs_addr=auditlogs.url)
        async with asgi_client(create_app(settings)) as client:
            body = {"identity_data": first.identity, "pubkey": first.pubkey}
            r = await client.post(f"{MGMT}/devices", json=body, headers=USER)
            assert r.status_code == 201, r.text
            first_id = r.headers["Location"].rsplit("/", 1)[1]
            # A device asking to be admitted is no operator's doing: no event.
            view = await register(client, second)
            second_id, auth_id = view["id"], view["auth_sets"][0]["id"]
            for status in ("accepted", "rejected"):
                r = await set_status(client, second_id, auth_id, status)
                assert r.status_code == 204, r.text
            r = await client.delete(f"{MGMT}/devices/{second_id}/auth/{auth_id}", headers=USER)
            assert r.status_code == 204, r.text
            r = await client.delete(f"{MGMT}/devices/{first_id}", headers=USER)
            assert r.status_code == 204, r.text

            async def five() -> bool:
                return len(await _trail(auditlogs)) == 5

            await eventually(five, what="five audit events")
        events = await _trail(auditlogs)
        assert [(e["action"], e["object"]["id"]) for e in events] == [
            ("preauthorize", first_id),
            ("accept", second_id),
            ("reject", second_id),
            ("dismiss", second_id),
            ("decommission", first_id),
        ]
        for e in events:
            assert e["actor"] == {"id": "user-1", "type": "user"}
            assert e["object"]["type"] == "device"
            assert json.loads(e["object"]["device"]["identity_data"]) in (
                first.identity,
                second.identity,
            )
            assert e["meta"]["request_id"][0]
        assert events[2]["change"] == f"auth set {auth_id} set to rejected"
