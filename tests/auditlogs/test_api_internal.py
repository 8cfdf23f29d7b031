"""Internal API: events delivered by the peers' outboxes, once each; tenant deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from tests.auditlogs.conftest import INTERNAL, LOGS, Useradm, event, post_event, user_headers
from tests.toolkit import assert_error


async def _listed(client: httpx.AsyncClient, tenant: str = "") -> list[dict[str, Any]]:
    response = await client.get(LOGS, headers=user_headers(tenant))
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


class TestCreateLog:
    async def test_records_the_event_with_the_actors_email(
        self, client: httpx.AsyncClient, useradm: Useradm
    ) -> None:
        user_id = await useradm.add_user("", "operator@example.com")
        when = datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
        body = event(
            actor_id=user_id,
            action="decommission",
            object_id="dev-1",
            when=when,
            change="decommissioned",
            meta={"request_id": ["rid-1"]},
        )
        await post_event(client, body)
        assert await _listed(client) == [
            {
                "actor": {"id": user_id, "type": "user", "email": "operator@example.com"},
                "action": "decommission",
                "object": {"id": "dev-1", "type": "device"},
                "change": "decommissioned",
                "meta": {"request_id": ["rid-1"]},
                "time": "2026-05-04T03:02:01.123000Z",
            }
        ]

    async def test_an_unknown_user_keeps_no_email(self, client: httpx.AsyncClient) -> None:
        await post_event(client, event(actor_id="gone"))
        [listed] = await _listed(client)
        assert listed["actor"] == {"id": "gone", "type": "user"}

    async def test_fills_in_the_email_of_a_user_object(
        self, client: httpx.AsyncClient, useradm: Useradm
    ) -> None:
        user_id = await useradm.add_user("t1", "new@example.com")
        await post_event(client, event(object_type="user", object_id=user_id), tenant="t1")
        [listed] = await _listed(client, "t1")
        assert listed["object"] == {
            "id": user_id,
            "type": "user",
            "user": {"email": "new@example.com"},
        }

    async def test_a_redelivery_is_stored_once(self, client: httpx.AsyncClient) -> None:
        body = event(action="accept")
        await post_event(client, body, key="effect-1")
        await post_event(client, body, key="effect-1")
        await post_event(client, body, key="effect-2")
        assert [e["action"] for e in await _listed(client)] == ["accept", "accept"]

    async def test_the_same_key_in_two_tenants_is_two_events(
        self, client: httpx.AsyncClient
    ) -> None:
        await post_event(client, event(), tenant="a", key="k")
        await post_event(client, event(), tenant="b", key="k")
        assert len(await _listed(client, "a")) == len(await _listed(client, "b")) == 1

    async def test_expires_after_the_retention(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        when = datetime(2026, 1, 1, tzinfo=UTC)
        await post_event(client, event(when=when))
        stored = await mongo[db_name]["logs"].find_one({})
        assert stored is not None
        assert stored["expire_ts"] == when + timedelta(days=90)

    async def test_missing_actor(self, client: httpx.AsyncClient) -> None:
        body = event()
        del body["actor"]
        response = await client.post(f"{INTERNAL}/tenants//logs", json=body)
        assert_error(response, 400, "actor: Field required")
        assert await _listed(client) == []

    async def test_unknown_object_type(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            f"{INTERNAL}/tenants//logs", json=event(object_type="spaceship")
        )
        assert_error(response, 400, "object.type")
        assert await _listed(client) == []

    async def test_time_without_zone(self, client: httpx.AsyncClient) -> None:
        body = event()
        body["time"] = "2026-01-01T00:00:00"
        response = await client.post(f"{INTERNAL}/tenants//logs", json=body)
        assert_error(response, 400, "time: Input should have timezone info")
        assert await _listed(client) == []

    async def test_unknown_field(self, client: httpx.AsyncClient) -> None:
        response = await client.post(f"{INTERNAL}/tenants//logs", json=event(extra="x"))
        assert_error(response, 400, "extra: Extra inputs are not permitted")
        assert await _listed(client) == []


class TestDeleteTenant:
    async def test_deletes_that_tenants_events_only(self, client: httpx.AsyncClient) -> None:
        await post_event(client, event(), tenant="doomed")
        await post_event(client, event(), tenant="kept")
        response = await client.delete(f"{INTERNAL}/tenants/doomed")
        assert response.status_code == 204
        assert response.content == b""
        assert await _listed(client, "doomed") == []
        assert len(await _listed(client, "kept")) == 1

    async def test_the_default_tenant_is_not_erased_by_an_empty_segment(
        self, client: httpx.AsyncClient
    ) -> None:
        await post_event(client, event())
        response = await client.delete(f"{INTERNAL}/tenants/")
        assert_error(response, 404, "not found")
        assert len(await _listed(client)) == 1
