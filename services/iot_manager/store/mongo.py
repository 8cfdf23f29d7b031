"""The MongoDB implementation of iot-manager's store; secrets are stored encrypted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import DESCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from common.core.mongo import DUPLICATE_KEY, Document, TenantCollection, atomically
from common.core.outbox import Effect, Outbox
from services.iot_manager.models import (
    AWSCredentials,
    AWSKeys,
    ConnectionString,
    Credentials,
    DeliveryStatus,
    Device,
    DeviceEvent,
    Event,
    HTTPCredentials,
    Integration,
    SASCredentials,
    WebhookTarget,
)
from services.iot_manager.store import DataStore, DuplicateIntegration, Removal
from services.iot_manager.store.indexes import DEVICES, EVENTS, INTEGRATIONS
from services.iot_manager.store.secrets import SecretBox

__all__ = ["MongoStore"]

# Delivery attempts kept per event (the latest ones).
_KEPT_STATUSES: Final = 20


def _context(tenant_id: str, integration_id: str) -> str:
    return f"{tenant_id}/{integration_id}"


class MongoStore(DataStore):
    """Stores integrations, devices and events; every query is scoped to one tenant."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        box: SecretBox,
        *,
        outbox: Outbox,
    ) -> None:
        self._client = client
        self._db = db
        self._box = box
        self._outbox = outbox

    def _coll(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    # -- credentials -----------------------------------------------------------------------

    def _credentials_doc(self, credentials: Credentials, context: str) -> Document:
        match credentials:
            case HTTPCredentials(http=target):
                http: Document = {"url": target.url}
                if target.secret is not None:
                    http["secret"] = self._box.seal(target.secret, context=context)
                return {"type": "http", "http": http}
            case AWSCredentials(aws=keys):
                sealed = self._box.seal(keys.secret_access_key, context=context)
                return {"type": "aws", "aws": {**keys.model_dump(), "secret_access_key": sealed}}
            case SASCredentials(connection_string=cs):
                return {
                    "type": "sas",
                    "connection_string": self._box.seal(cs.render(), context=context),
                }

    def _credentials(self, doc: Mapping[str, Any], context: str) -> Credentials:
        if doc["type"] == "http":
            http = doc["http"]
            secret = self._box.open(http["secret"], context=context) if "secret" in http else None
            return HTTPCredentials(http=WebhookTarget(url=http["url"], secret=secret))
        if doc["type"] == "aws":
            aws = dict(doc["aws"])
            aws["secret_access_key"] = self._box.open(aws["secret_access_key"], context=context)
            return AWSCredentials(aws=AWSKeys(**aws))
        text = self._box.open(doc["connection_string"], context=context)
        return SASCredentials(connection_string=ConnectionString.parse(text))

    def _integration(self, tenant_id: str, doc: Mapping[str, Any]) -> Integration:
        context = _context(tenant_id, doc["_id"])
        return Integration(
            id=doc["_id"],
            provider=doc["provider"],
            credentials=self._credentials(doc["credentials"], context),
            description=doc.get("description", ""),
        )

    # -- integrations ----------------------------------------------------------------------

    async def list_integrations(
        self, tenant_id: str, *, skip: int = 0, limit: int = 0
    ) -> list[Integration]:
        """The tenant's integrations (`limit` 0: all)."""
        cursor = self._coll(INTEGRATIONS, tenant_id).find({}).sort("_id").skip(skip).limit(limit)
        return [self._integration(tenant_id, doc) async for doc in cursor]

    async def get_integration(self, tenant_id: str, integration_id: str) -> Integration | None:
        """One integration, or None."""
        doc = await self._coll(INTEGRATIONS, tenant_id).find_one({"_id": integration_id})
        return None if doc is None else self._integration(tenant_id, doc)

    async def insert_integration(
        self, tenant_id: str, integration: Integration, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Store a new integration with `effects`; DuplicateIntegration when the tenant has one."""
        context = _context(tenant_id, integration.id)
        doc = {
            "_id": integration.id,
            "provider": integration.provider.value,
            "description": integration.description,
            "credentials": self._credentials_doc(integration.credentials, context),
        }

        async def work(session: AsyncClientSession) -> None:
            await self._coll(INTEGRATIONS, tenant_id).insert_one(doc, session=session)
            await self._outbox.add(effects, session=session)

        try:
            await atomically(self._client, work)
        except DuplicateKeyError as exc:
            raise DuplicateIntegration(tenant_id) from exc

    async def set_credentials(
        self,
        tenant_id: str,
        integration_id: str,
        credentials: Credentials,
        *,
        effects: Sequence[Effect] = (),
    ) -> bool:
        """Replace an integration's credentials, with `effects`; False (and nothing written)
        when there is no such integration."""
        sealed = self._credentials_doc(credentials, _context(tenant_id, integration_id))

        async def work(session: AsyncClientSession) -> bool:
            result = await self._coll(INTEGRATIONS, tenant_id).update_one(
                {"_id": integration_id}, {"$set": {"credentials": sealed}}, session=session
            )
            if result.matched_count == 0:
                return False
            await self._outbox.add(effects, session=session)
            return True

        return await atomically(self._client, work)

    async def remove_integration(
        self,
        tenant_id: str,
        integration_id: str,
        *,
        unless_in_use: bool,
        effects: Sequence[Effect] = (),
    ) -> Removal:
        """Remove an integration, with `effects`, but (with `unless_in_use`) not while devices
        use it."""

        async def work(session: AsyncClientSession) -> Removal:
            in_use = unless_in_use and await self._coll(DEVICES, tenant_id).find_one(
                {"integration_ids": integration_id}, {"_id": 1}, session=session
            )
            if in_use:
                return Removal.IN_USE
            result = await self._coll(INTEGRATIONS, tenant_id).delete_one(
                {"_id": integration_id}, session=session
            )
            if not result.deleted_count:
                return Removal.NOT_FOUND
            await self._outbox.add(effects, session=session)
            return Removal.REMOVED

        return await atomically(self._client, work)

    # -- devices ---------------------------------------------------------------------------

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """A device and its integrations, or None."""
        doc = await self._coll(DEVICES, tenant_id).find_one({"_id": device_id})
        return None if doc is None else _device(doc)

    async def get_devices(self, tenant_id: str, device_ids: Sequence[str]) -> list[Device]:
        """The known devices among `device_ids`."""
        cursor = self._coll(DEVICES, tenant_id).find({"_id": {"$in": list(device_ids)}})
        return [_device(doc) async for doc in cursor]

    async def delete_device(self, tenant_id: str, device_id: str) -> bool:
        """Forget a device's integrations; False when it had none."""
        result = await self._coll(DEVICES, tenant_id).delete_one({"_id": device_id})
        return result.deleted_count > 0

    # -- events ----------------------------------------------------------------------------

    async def known_events(self, tenant_id: str, event_ids: Sequence[str]) -> set[str]:
        """The ids among `event_ids` of events already recorded (one indexed read)."""
        if not event_ids:
            return set()
        query: Document = {"_id": {"$in": list(event_ids)}}
        return {d["_id"] async for d in self._coll(EVENTS, tenant_id).find(query, {"_id": 1})}

    async def record_events(
        self,
        tenant_id: str,
        events: Sequence[Event],
        *,
        expire_ts: datetime,
        link: Mapping[str, Sequence[str]],
        unlink: Sequence[str],
        effects: Sequence[Effect],
    ) -> bool:
        """In one transaction: store events, link devices (id → integration ids) to
        integrations, forget `unlink`ed devices, queue the deliveries. False when the events
        were already recorded (a repeated request)."""
        docs = [_event_doc(event, expire_ts) for event in events]
        devices = self._coll(DEVICES, tenant_id)

        async def work(session: AsyncClientSession) -> None:
            if docs:
                await self._coll(EVENTS, tenant_id).insert_many(docs, session=session)
            for device_id, integration_ids in link.items():
                await devices.update_one(
                    {"_id": device_id},
                    {"$addToSet": {"integration_ids": {"$each": list(integration_ids)}}},
                    upsert=True,
                    session=session,
                )
            if unlink:
                await devices.delete_many({"_id": {"$in": list(unlink)}}, session=session)
            await self._outbox.add(effects, session=session)

        try:
            await atomically(self._client, work)
        except DuplicateKeyError:
            return False
        except BulkWriteError as exc:
            if all(e.get("code") == DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                return False
            raise
        return True

    async def list_events(
        self, tenant_id: str, *, integration_id: str | None, skip: int, limit: int
    ) -> list[Event]:
        """One page of events, newest first (only those of one integration, if given)."""
        query: Document = {} if integration_id is None else {"integration_ids": integration_id}
        cursor = (
            self._coll(EVENTS, tenant_id)
            .find(query)
            .sort("event_ts", DESCENDING)
            .skip(skip)
            .limit(limit)
        )
        return [_event(doc) async for doc in cursor]

    async def get_event(self, tenant_id: str, event_id: str) -> Event | None:
        """One event, or None."""
        doc = await self._coll(EVENTS, tenant_id).find_one({"_id": event_id})
        return None if doc is None else _event(doc)

    async def add_delivery_status(
        self, tenant_id: str, event_id: str, status: DeliveryStatus
    ) -> None:
        """Record the outcome of a delivery attempt (the latest first)."""
        await self._coll(EVENTS, tenant_id).update_one(
            {"_id": event_id},
            {
                "$push": {
                    "delivery_statuses": {
                        "$each": [status.model_dump(exclude_none=True)],
                        "$position": 0,
                        "$slice": _KEPT_STATUSES,
                    }
                }
            },
        )

    async def delete_tenant(self, tenant_id: str) -> None:
        """Remove every integration, device and event of a tenant."""
        for name in (INTEGRATIONS, DEVICES, EVENTS):
            await self._coll(name, tenant_id).delete_many({})


def _device(doc: Mapping[str, Any]) -> Device:
    return Device(id=doc["_id"], integration_ids=tuple(doc.get("integration_ids", ())))


def _event_doc(event: Event, expire_ts: datetime) -> Document:
    return {
        "_id": event.id,
        "type": event.type.value,
        "data": event.data.model_dump(exclude_none=True),
        "event_ts": event.time,
        "expire_ts": expire_ts,
        "integration_ids": list(event.integration_ids),
        "delivery_statuses": [s.model_dump(exclude_none=True) for s in event.delivery_statuses],
    }


def _event(doc: Mapping[str, Any]) -> Event:
    return Event(
        id=doc["_id"],
        type=doc["type"],
        data=DeviceEvent.model_validate(doc["data"]),
        time=doc["event_ts"],
        integration_ids=tuple(doc.get("integration_ids", ())),
        delivery_statuses=tuple(
            DeliveryStatus.model_validate(s) for s in doc.get("delivery_statuses", ())
        ),
    )
