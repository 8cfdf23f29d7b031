"""The services' `/metrics`: requests by route template, database commands per request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from common.core.metrics import UNMATCHED_ROUTE
from common.core.settings import BaseServiceSettings
from common.web.app import METRICS_PATH, create_service_app, resources
from tests.conftest import ClientFactory
from tests.toolkit import Scrape
from tests.toolkit.metrics import SERVICE_FAMILIES

_PREFIX = "/api/management/v1/metered"
_TEMPLATE = f"{_PREFIX}/things/{{thing_id}}"


def _app(mongo_url: str, db_name: str) -> FastAPI:
    router = APIRouter(prefix=_PREFIX)

    @router.get("/things/{thing_id}")
    async def get_thing(request: Request, thing_id: str) -> dict[str, int]:
        db = resources(request).db
        await db.things.find_one({"tenant_id": "", "_id": thing_id})
        return {"count": await db.things.count_documents({"tenant_id": "", "kind": thing_id})}

    settings = BaseServiceSettings(mongo_url=mongo_url, mongo_db=db_name)
    return create_service_app(
        settings, name="metered", internal_prefix="/api/internal/v1/metered", routers=[router]
    )


@pytest.fixture
async def client(
    mongo_url: str, db_name: str, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(_app(mongo_url, db_name)) as c:
        yield c


async def _scrape(client: httpx.AsyncClient) -> Scrape:
    return Scrape.of(await client.get(METRICS_PATH))


class TestMetrics:
    async def test_families(self, client: httpx.AsyncClient) -> None:
        page = await _scrape(client)
        for family in SERVICE_FAMILIES:
            assert family in page.families

    async def test_request_counted_under_its_route_template(
        self, client: httpx.AsyncClient
    ) -> None:
        labels = {"route": _TEMPLATE, "method": "GET", "status": "200"}
        count = "fleetport_http_request_duration_seconds_count"
        before = (await _scrape(client)).value(count, **labels)
        thing = uuid.uuid4().hex
        r = await client.get(f"{_PREFIX}/things/{thing}")
        assert r.json() == {"count": 0}
        page = await _scrape(client)
        assert page.value(count, **labels) == before + 1
        # The raw path is never a label: every thing shares the template's series.
        assert thing not in str(page.families["fleetport_http_request_duration_seconds"])

    async def test_database_commands_counted_per_request(self, client: httpx.AsyncClient) -> None:
        ops = "fleetport_db_operations_per_request"
        before = await _scrape(client)
        for _ in range(3):
            await client.get(f"{_PREFIX}/things/{uuid.uuid4().hex}")
        after = await _scrape(client)
        # A find_one and a count (an aggregate) per request.
        assert after.value(f"{ops}_count", route=_TEMPLATE) == (
            before.value(f"{ops}_count", route=_TEMPLATE) + 3
        )
        assert after.value(f"{ops}_sum", route=_TEMPLATE) == (
            before.value(f"{ops}_sum", route=_TEMPLATE) + 6
        )

    async def test_unrouted_path_and_errors(self, client: httpx.AsyncClient) -> None:
        count = "fleetport_http_request_duration_seconds_count"
        unmatched = {"route": UNMATCHED_ROUTE, "method": "GET", "status": "404"}
        before = await _scrape(client)
        r = await client.get(f"/nothing/{uuid.uuid4().hex}")
        assert r.status_code == 404
        r = await client.post(f"{_PREFIX}/things/x")
        assert r.status_code == 405
        after = await _scrape(client)
        assert after.value(count, **unmatched) == before.value(count, **unmatched) + 1
        refused = {"route": _TEMPLATE, "method": "POST", "status": "405"}
        assert after.value(count, **refused) == before.value(count, **refused) + 1

    async def test_scrapes_are_not_measured(self, client: httpx.AsyncClient) -> None:
        await _scrape(client)
        page = await _scrape(client)
        assert METRICS_PATH not in str(page.families["fleetport_http_request_duration_seconds"])
