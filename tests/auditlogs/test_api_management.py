"""Management API: listing the trail with every filter and paging, and the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.auditlogs.conftest import LOGS, Useradm, event, post_event, user_headers
from tests.toolkit import assert_error

EXPORT = f"{LOGS}/export"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T0_UNIX = int(T0.timestamp())
HEADER = [
    "time",
    "actor.id",
    "actor.type",
    "actor.email",
    "actor.identity_data",
    "action",
    "object.id",
    "object.type",
    "object.name",
    "change",
]


async def _get(client: httpx.AsyncClient, path: str = LOGS, **params: Any) -> httpx.Response:
    return await client.get(path, params=params, headers=user_headers())


async def _actions(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await _get(client, **params)
    assert response.status_code == 200, response.text
    return [e["action"] for e in response.json()]


@pytest.fixture
async def trail(client: httpx.AsyncClient, useradm: Useradm) -> dict[str, str]:
    """Five events a minute apart (a0 … a4), by two users, on several objects."""
    alice = await useradm.add_user("", "alice@example.com")
    bob = await useradm.add_user("", "bob@example.com")
    bodies = [
        event(actor_id=alice, action="a0", object_type="device", object_id="dev-1"),
        event(actor_id=bob, action="a1", object_type="device", object_id="dev-2"),
        event(
            actor_id=alice,
            action="a2",
            object_type="deployment",
            object_id="dep-1",
            details={"name": "spring"},
        ),
        event(actor_id=bob, action="a3", object_type="user", object_id=alice),
        event(actor_id=alice, action="a4", object_type="artifact", object_id="art-1"),
    ]
    for n, body in enumerate(bodies):
        body["time"] = (T0 + timedelta(minutes=n)).isoformat()
        await post_event(client, body)
    return {"alice": alice, "bob": bob}


class TestListLogs:
    async def test_newest_first_with_paging_headers(
        self, client: httpx.AsyncClient, trail: dict[str, str]
    ) -> None:
        response = await _get(client, page=2, per_page=2)
        assert response.status_code == 200, response.text
        assert [e["action"] for e in response.json()] == ["a2", "a1"]
        assert response.headers["X-Total-Count"] == "5"
        link = response.headers["Link"]
        assert 'page=1&per_page=2>; rel="first"' in link
        assert 'page=1&per_page=2>; rel="prev"' in link
        assert 'page=3&per_page=2>; rel="next"' in link

    async def test_oldest_first(self, client: httpx.AsyncClient, trail: dict[str, str]) -> None:
        assert await _actions(client, sort="asc") == ["a0", "a1", "a2", "a3", "a4"]

    async def test_by_actor_id(self, client: httpx.AsyncClient, trail: dict[str, str]) -> None:
        assert await _actions(client, actor_id=trail["bob"]) == ["a3", "a1"]

    async def test_by_actor_email(self, client: httpx.AsyncClient, trail: dict[str, str]) -> None:
        assert await _actions(client, actor_email="alice@example.com") == ["a4", "a2", "a0"]

    async def test_by_object(self, client: httpx.AsyncClient, trail: dict[str, str]) -> None:
        assert await _actions(client, object_type="device") == ["a1", "a0"]
        assert await _actions(client, object_type="device", object_id="dev-2") == ["a1"]
        assert await _actions(client, object_id=trail["alice"]) == ["a3"]

    async def test_by_deployment_name(
        self, client: httpx.AsyncClient, trail: dict[str, str]
    ) -> None:
        found = await _get(client, object_type="deployment", object_deployment_name="spring")
        assert found.status_code == 200, found.text
        [deployment] = found.json()
        assert deployment["object"] == {
            "id": "dep-1",
            "type": "deployment",
            "deployment": {"name": "spring"},
        }
        assert await _actions(client, object_deployment_name="autumn") == []

    async def test_dates_include_both_bounds(
        self, client: httpx.AsyncClient, trail: dict[str, str]
    ) -> None:
        # The events of the first and last second named are included, none beyond them.
        after, before = T0_UNIX + 60, T0_UNIX + 180
        assert await _actions(client, created_after=after, created_before=before) == [
            "a3",
            "a2",
            "a1",
        ]
        assert await _actions(client, created_before=before - 1) == ["a2", "a1", "a0"]
        assert await _actions(client, created_after=after + 1) == ["a4", "a3", "a2"]

    async def test_other_tenants_are_invisible(
        self, client: httpx.AsyncClient, trail: dict[str, str]
    ) -> None:
        await post_event(client, event(action="theirs"), tenant="other")
        response = await client.get(LOGS, headers=user_headers("other"))
        assert [e["action"] for e in response.json()] == ["theirs"]
        assert "theirs" not in await _actions(client)

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"created_after": "yesterday"}, 'invalid created_after: "yesterday" is not a Unix'),
            ({"created_before": "1e3"}, 'invalid created_before: "1e3" is not a Unix'),
            ({"created_before": str(10**20)}, "is out of range"),
            ({"created_after": "99999999999999"}, '"99999999999999" is out of range'),
            (
                {"created_after": T0_UNIX + 1, "created_before": T0_UNIX},
                "created_after must not be later than created_before",
            ),
            ({"sort": "sideways"}, 'invalid sort: "sideways"; must be asc or desc'),
            ({"object_type": "spaceship"}, 'invalid object_type: "spaceship"; must be one of'),
            ({"page": 0}, "invalid page query: must be at least 1"),
            ({"per_page": "many"}, 'invalid per_page query: "many" is not a number'),
            ({"per_page": 501}, "invalid per_page query: must be at most 500"),
        ],
    )
    async def test_bad_query(
        self, client: httpx.AsyncClient, params: dict[str, Any], message: str
    ) -> None:
        assert_error(await _get(client, **params), 400, message)

    async def test_without_a_user_token(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(LOGS), 401, "Authorization not present in header")


def _rows(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.text)))


class TestExportLogs:
    async def test_every_event_as_csv(
        self, client: httpx.AsyncClient, trail: dict[str, str]
    ) -> None:
        header, *rows = _rows(await _get(client, EXPORT, sort="asc"))
        assert header == HEADER
        assert [r[5] for r in rows] == ["a0", "a1", "a2", "a3", "a4"]
        assert rows[2] == [
            "2026-03-01T12:02:00.000Z",
            trail["alice"],
            "user",
            "alice@example.com",
            "",
            "a2",
            "dep-1",
            "deployment",
            "spring",
            "",
        ]
        # A user object shows as its email, filled in from useradm.
        assert rows[3][6:9] == [trail["alice"], "user", "alice@example.com"]

    async def test_filters_and_limit(
        self, client: httpx.AsyncClient, trail: dict[str, str]
    ) -> None:
        _, *rows = _rows(await _get(client, EXPORT, actor_id=trail["alice"], limit=2))
        assert [r[5] for r in rows] == ["a4", "a2"]

    async def test_formulas_are_defused(self, client: httpx.AsyncClient) -> None:
        await post_event(
            client,
            event(
                action="update",
                change='=HYPERLINK("http://evil")',
                object_type="release",
                object_id="-1",
                details={"name": "@SUM(A1)"},
            ),
        )
        _, row = _rows(await _get(client, EXPORT))
        assert row[6:] == ["'-1", "release", "'@SUM(A1)", '\'=HYPERLINK("http://evil")']

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"limit": "all"}, 'invalid limit: "all" is not a number'),
            ({"limit": 0}, "invalid limit: must be at least 1"),
            ({"limit": 10**30}, "invalid limit: must be at most 10000000"),
            ({"object_type": "spaceship"}, 'invalid object_type: "spaceship"'),
            ({"created_after": "x"}, 'invalid created_after: "x"'),
        ],
    )
    async def test_bad_query(
        self, client: httpx.AsyncClient, params: dict[str, Any], message: str
    ) -> None:
        assert_error(await _get(client, EXPORT, **params), 400, message)

    async def test_other_tenants_are_invisible(self, client: httpx.AsyncClient) -> None:
        await post_event(client, event(action="theirs"), tenant="other")
        assert _rows(await _get(client, EXPORT)) == [HEADER]
