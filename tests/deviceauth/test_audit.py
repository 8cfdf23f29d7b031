"""An operator's changes to devices reach a real auditlogs service as audit events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.deviceauth.main import create_app
from tests.auditlogs.live import LiveAuditlogs, live_auditlogs
from tests.conftest import ClientFactory
from tests.deviceauth.conftest import MGMT, USER, FakeDevice, PrivateKey, register, set_status


@pytest.fixture
async def auditlogs(mongo_url: str, db_name: str) -> AsyncIterator[LiveAuditlogs]:
    """auditlogs served for real on its own database."""
    async with live_auditlogs(mongo_url, f"{db_name}_audit") as server:
        yield server


class TestAuditEvents:
    async def test_each_change_by_an_operator_is_one_event(
        self,
        auditlogs: LiveAuditlogs,
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
            events = await auditlogs.wait_for(5)
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
