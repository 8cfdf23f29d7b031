"""The store: credentials encrypted at rest, keys rotated, events and device links."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from common.core.mongo import Document, create_client, ensure_indexes
from common.core.outbox import Outbox
from services.iot_manager.app import DELIVERIES
from services.iot_manager.config import Settings
from services.iot_manager.main import create_app
from services.iot_manager.models import (
    AWSCredentials,
    AWSKeys,
    ConnectionString,
    DeliveryStatus,
    DeviceEvent,
    Event,
    EventType,
    HTTPCredentials,
    Integration,
    Provider,
    SASCredentials,
    WebhookTarget,
)
from services.iot_manager.store import DuplicateIntegration, Removal
from services.iot_manager.store.indexes import INDEXES
from services.iot_manager.store.mongo import MongoStore
from services.iot_manager.store.secrets import SecretBox, SecretUnreadable
from tests.conftest import ClientFactory
from tests.iot_manager.conftest import MGMT, USER, create_integration, webhook

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
HUB = ConnectionString.parse(
    f"HostName=h.azure-devices.net;SharedAccessKeyName=owner;"
    f"SharedAccessKey={base64.b64encode(b'hub-key-bytes').decode()}"
)
INTEGRATIONS = [
    Integration(
        id="a0000000-0000-4000-8000-000000000001",
        provider=Provider.WEBHOOK,
        credentials=HTTPCredentials(http=WebhookTarget(url="https://x.example", secret="c0ffee")),
    ),
    Integration(
        id="a0000000-0000-4000-8000-000000000002",
        provider=Provider.IOT_CORE,
        credentials=AWSCredentials(
            aws=AWSKeys(
                access_key_id="AKIA", secret_access_key="s3cr3t", region="r", device_policy_name="p"
            )
        ),
        description="aws",
    ),
    Integration(
        id="a0000000-0000-4000-8000-000000000003",
        provider=Provider.IOT_HUB,
        credentials=SASCredentials(connection_string=HUB),
    ),
]


@pytest.fixture
async def client_and_db(
    mongo_url: str, db_name: str
) -> AsyncIterator[tuple[AsyncMongoClient[Document], str]]:
    client = create_client(mongo_url)
    await ensure_indexes(client[db_name], INDEXES)
    try:
        yield client, db_name
    finally:
        await client.close()


def _store(
    client_and_db: tuple[AsyncMongoClient[Document], str], key: bytes, fallback: bytes | None = None
) -> MongoStore:
    client, db_name = client_and_db
    db = client[db_name]
    return MongoStore(client, db, SecretBox(key, fallback), outbox=Outbox(db, {DELIVERIES}))


class TestSecretsAtRest:
    @pytest.mark.parametrize("integration", INTEGRATIONS, ids=lambda i: i.provider.value)
    async def test_stored_encrypted_and_read_back(
        self,
        client_and_db: tuple[AsyncMongoClient[Document], str],
        mongo: AsyncMongoClient[Document],
        integration: Integration,
    ) -> None:
        store = _store(client_and_db, KEY_A)
        await store.insert_integration("t1", integration)
        raw = repr(await mongo[client_and_db[1]]["integrations"].find_one({}))
        for secret in ("c0ffee", "s3cr3t", base64.b64encode(b"hub-key-bytes").decode()):
            assert secret not in raw
        assert await store.get_integration("t1", integration.id) == integration
        assert await store.get_integration("t2", integration.id) is None

    async def test_key_rotation(
        self, client_and_db: tuple[AsyncMongoClient[Document], str]
    ) -> None:
        integration = INTEGRATIONS[1]
        await _store(client_and_db, KEY_A).insert_integration("t1", integration)
        rotated = _store(client_and_db, KEY_B, fallback=KEY_A)
        assert await rotated.get_integration("t1", integration.id) == integration
        # Written again, the credentials need only the new key.
        assert await rotated.set_credentials("t1", integration.id, integration.credentials)
        assert (
            await _store(client_and_db, KEY_B).get_integration("t1", integration.id) == integration
        )

    async def test_wrong_key(self, client_and_db: tuple[AsyncMongoClient[Document], str]) -> None:
        await _store(client_and_db, KEY_A).insert_integration("t1", INTEGRATIONS[0])
        with pytest.raises(SecretUnreadable, match="no configured key decrypts"):
            await _store(client_and_db, KEY_B).list_integrations("t1")

    async def test_a_secret_moved_to_another_document_does_not_open(
        self,
        client_and_db: tuple[AsyncMongoClient[Document], str],
        mongo: AsyncMongoClient[Document],
    ) -> None:
        store = _store(client_and_db, KEY_A)
        await store.insert_integration("t1", INTEGRATIONS[0])
        coll = mongo[client_and_db[1]]["integrations"]
        doc = await coll.find_one({"tenant_id": "t1"})
        assert doc is not None
        await coll.insert_one(
            {**doc, "tenant_id": "t2", "_id": "b0000000-0000-4000-8000-0000000000aa"}
        )
        with pytest.raises(SecretUnreadable):
            await store.list_integrations("t2")

    async def test_the_api_says_so(
        self, make_settings: Callable[..., Settings], asgi_client: ClientFactory
    ) -> None:
        key_a = base64.b64encode(KEY_A).decode()
        key_b = base64.b64encode(KEY_B).decode()
        async with asgi_client(create_app(make_settings(aes_encryption_key=key_a))) as client:
            await create_integration(client, webhook("http://127.0.0.1:9/x"))
        async with asgi_client(create_app(make_settings(aes_encryption_key=key_b))) as client:
            r = await client.get(f"{MGMT}/integrations", headers=USER)
        assert r.status_code == 500
        assert r.json()["error"] == "no configured key decrypts the stored secret"


class TestIntegrations:
    async def test_one_per_tenant(
        self, client_and_db: tuple[AsyncMongoClient[Document], str]
    ) -> None:
        store = _store(client_and_db, KEY_A)
        await store.insert_integration("t1", INTEGRATIONS[0])
        with pytest.raises(DuplicateIntegration):
            await store.insert_integration("t1", INTEGRATIONS[1])
        await store.insert_integration("t2", INTEGRATIONS[1])
        assert [i.id for i in await store.list_integrations("t1")] == [INTEGRATIONS[0].id]

    async def test_removal(self, client_and_db: tuple[AsyncMongoClient[Document], str]) -> None:
        store = _store(client_and_db, KEY_A)
        cloud = INTEGRATIONS[1]
        await store.insert_integration("t1", cloud)
        await store.record_events(
            "t1",
            [],
            expire_ts=datetime.now(UTC),
            link={"d1": [cloud.id]},
            unlink=[],
            effects=[],
        )
        assert await store.remove_integration("t1", cloud.id, unless_in_use=True) is Removal.IN_USE
        assert (
            await store.remove_integration("t2", cloud.id, unless_in_use=True) is Removal.NOT_FOUND
        )
        assert (
            await store.remove_integration("t1", cloud.id, unless_in_use=False) is Removal.REMOVED
        )
        assert await store.get_integration("t1", cloud.id) is None


class TestEvents:
    async def test_delivery_statuses_keep_the_latest_first(
        self, client_and_db: tuple[AsyncMongoClient[Document], str]
    ) -> None:
        store = _store(client_and_db, KEY_A)
        now = datetime.now(UTC).replace(microsecond=0)
        event = Event(
            id="e1",
            type=EventType.DECOMMISSIONED,
            data=DeviceEvent(id="d1"),
            time=now,
            integration_ids=("i1",),
        )
        recorded = await store.record_events(
            "t1", [event], expire_ts=now + timedelta(days=1), link={}, unlink=["d1"], effects=[]
        )
        assert recorded
        assert not await store.record_events(
            "t1", [event], expire_ts=now + timedelta(days=1), link={}, unlink=[], effects=[]
        )
        for code in range(25):
            await store.add_delivery_status(
                "t1", "e1", DeliveryStatus(integration_id="i1", success=False, status_code=code)
            )
        stored = await store.get_event("t1", "e1")
        assert stored is not None
        assert [s.status_code for s in stored.delivery_statuses] == list(range(24, 4, -1))
        assert stored.model_copy(update={"delivery_statuses": ()}) == event
        assert await store.get_event("t2", "e1") is None


class TestSettings:
    def test_key_required_outside_development(self) -> None:
        with pytest.raises(ValidationError, match="aes_encryption_key is required"):
            Settings(dev_mode=False)
        key = base64.b64encode(KEY_A).decode()
        assert Settings(dev_mode=False, aes_encryption_key=key).encryption_keys() == (KEY_A, None)

    @pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
    def test_bad_key(self, value: str) -> None:
        with pytest.raises(ValidationError, match="aes_encryption_key"):
            Settings(dev_mode=True, aes_encryption_key=value)


class TestIndexes:
    @pytest.mark.parametrize(
        ("collection", "query", "sort"),
        [
            ("integrations", {"tenant_id": "t1"}, None),
            ("devices", {"tenant_id": "t1", "integration_ids": "i1"}, None),
            ("events", {"tenant_id": "t1"}, "event_ts"),
            ("events", {"tenant_id": "t1", "integration_ids": "i1"}, "event_ts"),
        ],
    )
    async def test_queries_use_an_index(
        self,
        client_and_db: tuple[AsyncMongoClient[Document], str],
        mongo: AsyncMongoClient[Document],
        collection: str,
        query: dict[str, str],
        sort: str | None,
    ) -> None:
        cursor = mongo[client_and_db[1]][collection].find(query)
        if sort is not None:
            cursor = cursor.sort(sort, -1)
        plan = (await cursor.explain())["queryPlanner"]["winningPlan"]
        assert "IXSCAN" in json.dumps(plan)
