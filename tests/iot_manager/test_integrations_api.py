"""The integrations API: one per tenant, three providers, secrets never shown, bad input 400."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.iot_manager.config import Settings
from services.iot_manager.main import create_app
from tests.auditlogs.live import live_auditlogs
from tests.conftest import ClientFactory
from tests.iot_manager.conftest import (
    MGMT,
    SECRET,
    USER,
    create_integration,
    user_headers,
    webhook,
)
from tests.toolkit import assert_error

HUB_KEY = base64.b64encode(b"k" * 32).decode()
# The hub's host must resolve when the integration is created: localhost does, here.
HUB = f"HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={HUB_KEY}"
AWS = {
    "access_key_id": "AKIAEXAMPLE",
    "secret_access_key": "very-secret",
    "region": "eu-west-1",
    "device_policy_name": "mender",
}


def aws_integration(**keys: str) -> dict[str, Any]:
    return {"provider": "iot-core", "credentials": {"type": "aws", "aws": {**AWS, **keys}}}


def hub_integration(connection_string: str = HUB) -> dict[str, Any]:
    return {
        "provider": "iot-hub",
        "credentials": {"type": "sas", "connection_string": connection_string},
    }


async def _integrations(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get(f"{MGMT}/integrations", headers=USER)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


class TestGetIntegrations:
    async def test_none_is_an_empty_list(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/integrations", headers=USER)
        assert r.status_code == 200
        assert r.json() == []

    async def test_needs_a_user(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/integrations")
        assert r.status_code == 401
        assert set(r.json()) == {"error", "request_id"}

    async def test_secrets_are_masked(self, client: httpx.AsyncClient) -> None:
        integration_id = await create_integration(
            client, webhook("http://127.0.0.1:9/hooks", description="alerts")
        )
        assert await _integrations(client) == [
            {
                "id": integration_id,
                "provider": "webhook",
                "credentials": {
                    "type": "http",
                    "http": {"url": "http://127.0.0.1:9/hooks", "secret": "<omitted>"},
                },
                "description": "alerts",
            }
        ]

    async def test_tenants_see_their_own(self, client: httpx.AsyncClient) -> None:
        await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await client.get(f"{MGMT}/integrations", headers=user_headers("tenant-b"))
        assert r.json() == []

    async def test_bad_paging(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/integrations", params={"per_page": "x"}, headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == 'invalid per_page query: "x" is not a number'


class TestCreateIntegration:
    async def test_webhook(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        r = await client.post(
            f"{MGMT}/integrations", json=webhook("http://127.0.0.1:9/x", id="ignored"), headers=USER
        )
        assert r.status_code == 201
        assert r.content == b""
        location = r.headers["Location"]
        assert location.startswith(f"{MGMT}/integrations/")
        integration_id = location.rsplit("/", 1)[1]
        assert str(uuid.UUID(integration_id)) == integration_id
        r = await client.get(location, headers=USER)
        assert r.status_code == 200
        assert r.json()["credentials"]["http"] == {
            "url": "http://127.0.0.1:9/x",
            "secret": "<omitted>",
        }
        # Stored encrypted: the secret appears nowhere in the document.
        doc = await mongo[db_name]["integrations"].find_one({"_id": integration_id})
        assert doc is not None
        assert SECRET not in repr(doc)
        assert doc["credentials"]["http"]["secret"]["algorithm"] == "AES_256_GCM"

    async def test_aws(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        integration_id = await create_integration(client, aws_integration())
        [found] = await _integrations(client)
        assert found == {
            "id": integration_id,
            "provider": "iot-core",
            "credentials": {"type": "aws", "aws": {**AWS, "secret_access_key": "<omitted>"}},
        }
        doc = await mongo[db_name]["integrations"].find_one({})
        assert doc is not None
        assert "very-secret" not in repr(doc)

    async def test_azure(self, client: httpx.AsyncClient) -> None:
        await create_integration(client, hub_integration())
        [found] = await _integrations(client)
        masked = found["credentials"]["connection_string"]
        assert masked == (
            f"HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={HUB_KEY[:4]}"
            "...<omitted>"
        )

    async def test_one_per_tenant(self, client: httpx.AsyncClient) -> None:
        await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await client.post(f"{MGMT}/integrations", json=aws_integration(), headers=USER)
        assert r.status_code == 409
        assert r.json()["error"] == "integration already exists"
        assert len(await _integrations(client)) == 1
        other = user_headers("tenant-b")
        r = await client.post(f"{MGMT}/integrations", json=aws_integration(), headers=other)
        assert r.status_code == 201

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (
                {"provider": "webhook", "credentials": {"type": "aws", "aws": AWS}},
                "'webhook' incompatible with credential type 'aws'",
            ),
            (
                {**aws_integration(), "provider": "iot-hub"},
                "'iot-hub' incompatible with credential type 'aws'",
            ),
            (
                webhook("http://127.0.0.1:9/x", secret="not hex"),
                "invalid request: credentials.http.http.secret: Value error, the secret must be a "
                "hexadecimal string (0-9, a-f) of an even number of at most 64 characters",
            ),
            (
                webhook("http://127.0.0.1:9/x", secret="a" * 66),
                "invalid request: credentials.http.http.secret: Value error, the secret must be a "
                "hexadecimal string (0-9, a-f) of an even number of at most 64 characters",
            ),
            (
                webhook("ftp://example.com/x"),
                "invalid webhook URL: the URL must be http:// or https:// with a host",
            ),
            (
                webhook("http://127.0.0.1:9/x", description="d" * 1025),
                "invalid request: description: String should have at most 1024 characters",
            ),
            (
                aws_integration(region=""),
                "invalid request: credentials.aws.aws.region: "
                "String should have at least 1 character",
            ),
            (
                hub_integration("HostName=localhost;SharedAccessKey=%%%"),
                "invalid request: credentials.sas.connection_string: Value error, "
                "SharedAccessKey is not valid base64",
            ),
            (
                hub_integration(f"HostName=localhost;SharedAccessKey={HUB_KEY}"),
                "invalid request: credentials.sas.connection_string: Value error, "
                "one of 'DeviceId' or 'SharedAccessKeyName' must be set",
            ),
            (
                hub_integration(HUB.replace("localhost", "evil.example.com")),
                "connection string invalid: host 'evil.example.com' is not a trusted domain",
            ),
            ({"provider": "carrier-pigeon", "credentials": {}}, None),
            ({"provider": "webhook"}, "invalid request: credentials: Field required"),
        ],
    )
    async def test_bad_input(
        self, client: httpx.AsyncClient, body: dict[str, Any], message: str | None
    ) -> None:
        r = await client.post(f"{MGMT}/integrations", json=body, headers=USER)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error", "request_id"}
        if message is not None:
            assert r.json()["error"] == message
        assert await _integrations(client) == []

    async def test_not_json(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            f"{MGMT}/integrations",
            content=b"{",
            headers={**USER, "Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["error"].startswith("failed to decode request body")


class TestAddressChecks:
    """Without domain_skipverify, targets on reserved addresses are refused at creation."""

    @pytest.fixture
    async def strict(
        self, make_settings: Callable[..., Settings], asgi_client: ClientFactory
    ) -> Any:
        async with asgi_client(create_app(make_settings(domain_skipverify=False))) as c:
            yield c

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8080/hooks",
            "http://localhost/hooks",
            "https://10.1.2.3/hooks",
            "http://192.168.0.10/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:80/",
        ],
    )
    async def test_reserved_webhook_targets_are_refused(
        self, strict: httpx.AsyncClient, url: str
    ) -> None:
        r = await strict.post(f"{MGMT}/integrations", json=webhook(url), headers=USER)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error.startswith("invalid webhook URL: host ")
        assert "resolves to a reserved address" in error
        assert await _integrations(strict) == []

    async def test_unresolvable_host(self, strict: httpx.AsyncClient) -> None:
        body = webhook("http://no-such-host.invalid/hooks")
        r = await strict.post(f"{MGMT}/integrations", json=body, headers=USER)
        assert r.status_code == 400
        assert r.json()["error"].startswith(
            "invalid webhook URL: cannot resolve host 'no-such-host.invalid'"
        )

    async def test_new_credentials_are_checked_too(
        self, strict: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        # Created (by an app that allows loopback) in the same database, then refused.
        integration_id = await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await strict.put(
            f"{MGMT}/integrations/{integration_id}/credentials",
            json={"type": "http", "http": {"url": "http://127.0.0.2/b"}},
            headers=USER,
        )
        assert r.status_code == 400
        assert "reserved address (127.0.0.2)" in r.json()["error"]
        [found] = await _integrations(strict)
        assert found["credentials"]["http"]["url"] == "http://127.0.0.1:9/a"


class TestGetIntegrationById:
    async def test_not_found(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/integrations/{uuid.uuid4()}", headers=USER)
        assert r.status_code == 404
        assert r.json()["error"] == "integration not found"

    async def test_not_a_uuid(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{MGMT}/integrations/abc", headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == "integration ID must be a valid UUID"

    async def test_other_tenant(self, client: httpx.AsyncClient) -> None:
        integration_id = await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await client.get(
            f"{MGMT}/integrations/{integration_id}", headers=user_headers("tenant-b")
        )
        assert_error(r, 404, "integration not found")
        assert [i["id"] for i in await _integrations(client)] == [integration_id]


class TestSetIntegrationCredentials:
    async def test_replaces_them(self, client: httpx.AsyncClient) -> None:
        integration_id = await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await client.put(
            f"{MGMT}/integrations/{integration_id}/credentials",
            json={"type": "http", "http": {"url": "http://127.0.0.1:9/b"}},
            headers=USER,
        )
        assert r.status_code == 204
        assert r.content == b""
        [found] = await _integrations(client)
        assert found["credentials"] == {"type": "http", "http": {"url": "http://127.0.0.1:9/b"}}

    async def test_of_another_kind(self, client: httpx.AsyncClient) -> None:
        integration_id = await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await client.put(
            f"{MGMT}/integrations/{integration_id}/credentials",
            json={"type": "aws", "aws": AWS},
            headers=USER,
        )
        assert r.status_code == 400
        assert r.json()["error"] == "'webhook' incompatible with credential type 'aws'"
        [found] = await _integrations(client)
        assert found["credentials"]["type"] == "http"

    async def test_bad_body(self, client: httpx.AsyncClient) -> None:
        integration_id = await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await client.put(
            f"{MGMT}/integrations/{integration_id}/credentials",
            json={"type": "http"},
            headers=USER,
        )
        assert r.status_code == 400
        assert r.json()["error"] == "invalid request: http.http: Field required"

    async def test_not_found(self, client: httpx.AsyncClient) -> None:
        r = await client.put(
            f"{MGMT}/integrations/{uuid.uuid4()}/credentials",
            json={"type": "http", "http": {"url": "http://127.0.0.1:9/b"}},
            headers=USER,
        )
        assert r.status_code == 404
        assert r.json()["error"] == "integration not found"


class TestRemoveIntegration:
    async def test_webhook(self, client: httpx.AsyncClient) -> None:
        integration_id = await create_integration(client, webhook("http://127.0.0.1:9/a"))
        r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
        assert r.status_code == 204
        assert await _integrations(client) == []
        r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
        assert r.status_code == 404
        assert r.json()["error"] == "integration not found"

    async def test_not_a_uuid(self, client: httpx.AsyncClient) -> None:
        r = await client.delete(f"{MGMT}/integrations/123", headers=USER)
        assert r.status_code == 400
        assert r.json()["error"] == "integration ID must be a valid UUID"

    async def test_cloud_integration_in_use(
        self, client: httpx.AsyncClient, mongo: AsyncMongoClient[Document], db_name: str
    ) -> None:
        integration_id = await create_integration(client, aws_integration())
        await mongo[db_name]["devices"].insert_one(
            {"_id": "dev-1", "tenant_id": "", "integration_ids": [integration_id]}
        )
        r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
        assert r.status_code == 409
        assert r.json()["error"] == "cannot remove integration in use by devices"
        assert len(await _integrations(client)) == 1

        r = await client.delete(f"{MGMT}/devices/dev-1", headers=USER)
        assert r.status_code == 204
        r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
        assert r.status_code == 204
        assert await _integrations(client) == []


class TestUnregisterDevice:
    async def test_unknown_device(self, client: httpx.AsyncClient) -> None:
        r = await client.delete(f"{MGMT}/devices/nope", headers=USER)
        assert r.status_code == 404
        assert r.json()["error"] == "device not found"


class TestHealth:
    async def test_health_and_alive(self, client: httpx.AsyncClient) -> None:
        for path in ("health", "alive"):
            r = await client.get(f"/api/internal/v1/iot-manager/{path}")
            assert r.status_code == 204
            assert r.content == b""


class TestAuditEvents:
    async def test_create_change_and_delete_are_recorded(
        self,
        make_settings: Callable[..., Settings],
        asgi_client: ClientFactory,
        mongo_url: str,
        db_name: str,
    ) -> None:
        async with live_auditlogs(mongo_url, f"{db_name}_audit") as auditlogs:
            settings = make_settings(auditlogs_addr=auditlogs.url)
            async with asgi_client(create_app(settings, environ={})) as client:
                body = webhook("http://localhost:9/hook", description="alerts")
                integration_id = await create_integration(client, body)
                r = await client.put(
                    f"{MGMT}/integrations/{integration_id}/credentials",
                    json=webhook("http://localhost:9/other")["credentials"],
                    headers=USER,
                )
                assert r.status_code == 204, r.text
                r = await client.delete(f"{MGMT}/integrations/{integration_id}", headers=USER)
                assert r.status_code == 204, r.text
                events = await auditlogs.wait_for(3)
        assert [(e["action"], e.get("change")) for e in events] == [
            ("create", None),
            ("update", "credentials replaced"),
            ("delete", None),
        ]
        for e in events:
            assert e["object"] == {
                "id": integration_id,
                "type": "integration",
                "integration": {"name": "alerts"},
            }
            assert e["actor"]["type"] == "user"
            assert SECRET not in str(e)
