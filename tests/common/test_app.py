"""The shared app factory: error shape, request ids, limits, health, paging, tenant paths."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict

from common.core.errors import BadRequest, Conflict
from common.core.pages import MAX_PAGE, MAX_PER_PAGE, Page
from common.core.settings import BaseServiceSettings
from common.localstack.embedded import free_port
from common.web.app import (
    Resources,
    create_service_app,
    resources,
    services_dependency,
    services_of,
)
from common.web.identity import DeviceIdentity
from common.web.paging import PageDep, set_page_headers
from common.web.routing import TENANT
from tests.conftest import ClientFactory
from tests.toolkit import assert_error


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: int


def _app(mongo_url: str, db_name: str) -> FastAPI:
    router = APIRouter(prefix="/api/management/v1/demo")

    @router.post("/things", status_code=201)
    async def create_thing(body: _Body) -> dict[str, str]:
        if body.name == "taken":
            raise Conflict("thing exists")
        return {"name": body.name}

    @router.get("/things")
    async def list_things(request: Request, response: Response, page: PageDep) -> list[int]:
        set_page_headers(request, response, page, total=45)
        return list(range(page.skip, min(45, page.skip + page.per_page)))

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @router.get("/count")
    async def count(request: Request) -> int:
        return await resources(request).db.things.count_documents({})

    @router.get("/me")
    async def me(identity: DeviceIdentity) -> dict[str, str]:
        return {"sub": identity.subject}

    internal = APIRouter(prefix="/api/internal/v1/demo")

    @internal.get(f"/tenants/{TENANT}/echo")
    async def echo(tenant_id: str) -> dict[str, str]:
        return {"tenant": tenant_id}

    settings = BaseServiceSettings(mongo_url=mongo_url, mongo_db=db_name, request_size_limit=2048)
    return create_service_app(
        settings, name="demo", internal_prefix="/api/internal/v1/demo", routers=[router, internal]
    )


@pytest.fixture
async def client(
    mongo_url: str, db_name: str, asgi_client: ClientFactory
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(_app(mongo_url, db_name)) as c:
        yield c


class TestErrors:
    async def test_unknown_route(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/nope", headers={"X-MEN-RequestID": "rid-1"})
        assert r.status_code == 404
        assert r.json() == {"error": "not found", "request_id": "rid-1"}
        assert r.headers["X-MEN-RequestID"] == "rid-1"

    async def test_wrong_method(self, client: httpx.AsyncClient) -> None:
        r = await client.delete("/api/management/v1/demo/things")
        assert r.status_code == 405
        assert r.json()["error"] == "method not allowed"
        assert r.json()["request_id"] == r.headers["X-MEN-RequestID"]

    async def test_malformed_json(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/api/management/v1/demo/things",
            content=b"{bad",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["error"].startswith("failed to decode request body")

    async def test_wrong_type_and_unknown_field(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/management/v1/demo/things", json={"name": "a", "count": "x"})
        assert r.status_code == 400
        assert "count" in r.json()["error"]
        r = await client.post(
            "/api/management/v1/demo/things", json={"name": "a", "count": 1, "extra": 1}
        )
        assert r.status_code == 400
        assert "extra" in r.json()["error"]

    async def test_domain_error(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/management/v1/demo/things", json={"name": "taken", "count": 1})
        assert r.status_code == 409
        assert r.json()["error"] == "thing exists"

    async def test_body_over_limit(self, client: httpx.AsyncClient) -> None:
        big = {"name": "x" * 5000, "count": 1}
        r = await client.post("/api/management/v1/demo/things", json=big)
        assert_error(r, 413, "request body exceeds the limit of 2048 bytes")

    async def test_chunked_body_over_limit(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        r = await client.post(
            "/api/management/v1/demo/things",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert_error(r, 413, "request body exceeds the limit of 2048 bytes")

    async def test_missing_identity(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/management/v1/demo/me")
        assert_error(r, 401, "Authorization not present in header")
        r = await client.get("/api/management/v1/demo/me", headers={"Authorization": "Bearer x.y"})
        assert_error(r, 401, "malformed token")

    async def test_database_down(self, db_name: str, asgi_client: ClientFactory) -> None:
        nowhere = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
        async with asgi_client(_app(nowhere, db_name)) as client:
            r = await client.get("/api/management/v1/demo/count")
            health = await client.get("/api/internal/v1/demo/health")

        assert r.status_code == 503
        assert r.json()["error"] == "database is unreachable"
        assert health.status_code == 503


class TestUnhandledError:
    async def test_500_carries_the_request_id(
        self, mongo_url: str, db_name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        app = _app(mongo_url, db_name)
        # As a server does: the app's exception reaches the server after the 500 went out.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            given = await client.get(
                "/api/management/v1/demo/boom", headers={"X-MEN-RequestID": "rid-500"}
            )
            made = await client.get("/api/management/v1/demo/boom")

        assert given.status_code == 500
        assert given.json() == {"error": "internal error", "request_id": "rid-500"}
        assert given.headers["X-MEN-RequestID"] == "rid-500"
        assert made.status_code == 500
        assert made.json()["request_id"] == made.headers["X-MEN-RequestID"]
        assert uuid.UUID(made.json()["request_id"])
        logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        errors = [e for e in logged if e["msg"] == "unhandled error"]
        assert [e["request_id"] for e in errors] == ["rid-500", made.json()["request_id"]]
        assert all("RuntimeError: a bug" in e["exc"] for e in errors)


class TestHealth:
    async def test_health_and_alive(self, client: httpx.AsyncClient) -> None:
        for probe in ("health", "alive"):
            r = await client.get(f"/api/internal/v1/demo/{probe}")
            assert r.status_code == 204
            assert r.content == b""


class TestPaging:
    async def test_defaults_and_links(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/management/v1/demo/things?page=2")
        assert r.status_code == 200
        assert r.json() == list(range(20, 40))
        assert r.headers["X-Total-Count"] == "45"
        link = r.headers["Link"]
        assert 'page=1&per_page=20>; rel="first"' in link
        assert 'page=1&per_page=20>; rel="prev"' in link
        assert 'page=3&per_page=20>; rel="next"' in link
        assert 'page=3&per_page=20>; rel="last"' in link

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("page=0", "invalid page query: must be at least 1"),
            ("page=-1", "invalid page query: must be at least 1"),
            ("per_page=501", "invalid per_page query: must be at most 500"),
            ("per_page=0", "invalid per_page query: must be at least 1"),
            ("per_page=abc", 'invalid per_page query: "abc" is not a number'),
            ("page=18446744073709551617", f"invalid page query: must be at most {MAX_PAGE}"),
            (f"page={MAX_PAGE + 1}", f"invalid page query: must be at most {MAX_PAGE}"),
        ],
    )
    async def test_bad_values(self, client: httpx.AsyncClient, query: str, message: str) -> None:
        r = await client.get(f"/api/management/v1/demo/things?{query}")
        assert r.status_code == 400
        assert r.json() == {"error": message, "request_id": r.headers["X-MEN-RequestID"]}

    def test_the_last_page_is_the_last_a_signed_64_bit_skip_reaches(self) -> None:
        assert Page(page=MAX_PAGE, per_page=MAX_PER_PAGE).skip <= 2**63 - 1
        assert MAX_PAGE * MAX_PER_PAGE > 2**63 - 1  # where a page after it would start

    @pytest.mark.parametrize(
        ("page", "per_page", "message"),
        [
            (0, 20, "invalid page: must be at least 1"),
            (MAX_PAGE + 1, 20, f"invalid page: must be at most {MAX_PAGE}"),
            (1, 501, "invalid per_page: must be at most 500"),
        ],
    )
    def test_out_of_range_page_refused_however_made(
        self, page: int, per_page: int, message: str
    ) -> None:
        with pytest.raises(BadRequest) as refused:
            Page(page=page, per_page=per_page, from_query=False)
        assert refused.value.message == message


class TestTenantPath:
    async def test_empty_tenant_segment(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/internal/v1/demo/tenants//echo")
        assert r.json() == {"tenant": ""}
        r = await client.get("/api/internal/v1/demo/tenants/t1/echo")
        assert r.json() == {"tenant": "t1"}


@dataclass
class _Services:
    """A service's typed services object, as its setup builds it."""

    database: str
    events: list[str] = field(default_factory=list)


_ServicesDep = Annotated[_Services, Depends(services_dependency(_Services))]


def _app_with_services(mongo_url: str, db_name: str, events: list[str]) -> FastAPI:
    router = APIRouter(prefix="/api/management/v1/demo")

    @router.get("/database")
    async def database(services: _ServicesDep) -> dict[str, str]:
        services.events.append("request")
        return {"database": services.database}

    @asynccontextmanager
    async def setup(res: Resources) -> AsyncIterator[_Services]:
        events.append("setup")
        yield _Services(database=res.db.name, events=events)
        events.append("teardown")

    settings = BaseServiceSettings(mongo_url=mongo_url, mongo_db=db_name)
    return create_service_app(
        settings,
        name="demo",
        internal_prefix="/api/internal/v1/demo",
        routers=[router],
        setup=setup,
    )


class TestServices:
    async def test_routes_get_what_the_setup_yielded(
        self, mongo_url: str, db_name: str, asgi_client: ClientFactory
    ) -> None:
        events: list[str] = []
        app = _app_with_services(mongo_url, db_name, events)
        async with asgi_client(app) as client:
            r = await client.get("/api/management/v1/demo/database")
            services = services_of(app, _Services)
            assert events == ["setup", "request"]

        assert r.status_code == 200
        assert r.json() == {"database": db_name}
        assert services.database == db_name
        assert events == ["setup", "request", "teardown"]

    async def test_wrong_kind_is_refused(
        self, mongo_url: str, db_name: str, asgi_client: ClientFactory
    ) -> None:
        app = _app_with_services(mongo_url, db_name, [])
        async with asgi_client(app):
            with pytest.raises(TypeError, match="the app's services are _Services, not Resources"):
                services_of(app, Resources)

    async def test_app_without_setup_has_none(
        self, mongo_url: str, db_name: str, asgi_client: ClientFactory
    ) -> None:
        app = _app(mongo_url, db_name)
        async with asgi_client(app):
            with pytest.raises(TypeError, match="the app's services are NoneType, not _Services"):
                services_of(app, _Services)
