"""The deviceconfig store on MongoDB: one document per device in `devices`.

A configuration is stored as a list of `{"key", "value"}` pairs, as Mender stores it:
keys are free text, and a key such as `a.b` or `$x` could not be a field name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection, atomically
from common.core.outbox import Effect, Outbox
from services.deviceconfig.models import Configuration, DeviceConfiguration
from services.deviceconfig.store import DeviceIdTaken
from services.deviceconfig.store.indexes import DEVICES

__all__ = ["MongoStore"]

_CONFIGURED: Final = "configured"
_REPORTED: Final = "reported"


def _pairs(configuration: Configuration) -> list[Document]:
    return [{"key": key, "value": value} for key, value in configuration.items()]


def _configuration(pairs: Any) -> Configuration:
    return {pair["key"]: pair["value"] for pair in pairs or ()}


def _device(doc: Mapping[str, Any]) -> DeviceConfiguration:
    return DeviceConfiguration(
        id=str(doc["_id"]),
        configured=_configuration(doc.get(_CONFIGURED)),
        reported=_configuration(doc.get(_REPORTED)),
        deployment_id=doc.get("deployment_id"),
        updated_ts=doc.get("updated_ts"),
        reported_ts=doc.get("reported_ts"),
        revision=int(doc.get("revision", 0)),
    )


def _document(device: DeviceConfiguration) -> Document:
    return {
        "_id": device.id,
        _CONFIGURED: _pairs(device.configured),
        _REPORTED: _pairs(device.reported),
        "updated_ts": device.updated_ts,
        "revision": device.revision,
    }


class MongoStore:
    """Device configurations on one Mongo database, and the outbox; every query is
    tenant-scoped."""

    def __init__(
        self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document], *, outbox: Outbox
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox

    def _devices(self, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[DEVICES], tenant_id)

    async def _upsert(
        self, tenant_id: str, device_id: str, update: Document, effects: Sequence[Effect] = ()
    ) -> None:
        devices = self._devices(tenant_id)

        async def work(session: AsyncClientSession | None) -> None:
            await devices.update_one({"_id": device_id}, update, upsert=True, session=session)
            await self._outbox.add(effects, session=session)

        async def write() -> None:
            if effects:
                await atomically(self._client, work)
            else:
                await work(None)

        try:
            await write()
        except DuplicateKeyError:
            # Two first writes raced, and the other one inserted: this one now updates.
            # A second clash means the id belongs to another tenant.
            try:
                await write()
            except DuplicateKeyError:
                raise DeviceIdTaken(device_id) from None

    async def get_device(self, tenant_id: str, device_id: str) -> DeviceConfiguration | None:
        """Return one device, or None."""
        doc = await self._devices(tenant_id).find_one({"_id": device_id})
        return _device(doc) if doc else None

    async def insert_device(self, tenant_id: str, device: DeviceConfiguration) -> None:
        """Record a new device; `DeviceIdTaken` if it exists."""
        try:
            await self._devices(tenant_id).insert_one(_document(device))
        except DuplicateKeyError:
            raise DeviceIdTaken(device.id) from None

    async def insert_devices(self, tenant_id: str, devices: Sequence[DeviceConfiguration]) -> None:
        """Record new devices in one statement, leaving those that exist as they are."""
        await self._devices(tenant_id).insert_new([_document(d) for d in devices])

    async def replace_configured(
        self,
        tenant_id: str,
        device_id: str,
        configured: Configuration,
        *,
        now: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Set the desired configuration (recording the device if new), with `effects`."""
        await self._upsert(
            tenant_id,
            device_id,
            {
                "$set": {_CONFIGURED: _pairs(configured), "updated_ts": now},
                "$inc": {"revision": 1},
            },
            effects,
        )

    async def update_configured(
        self,
        tenant_id: str,
        device_id: str,
        configured: Configuration,
        *,
        now: datetime,
        revision: int,
    ) -> bool:
        """Set the desired configuration if it is still at `revision`; whether it was."""
        result = await self._devices(tenant_id).update_one(
            {"_id": device_id, "revision": revision},
            {
                "$set": {
                    _CONFIGURED: _pairs(configured),
                    "updated_ts": now,
                    "revision": revision + 1,
                }
            },
        )
        return result.matched_count == 1

    async def replace_reported(
        self, tenant_id: str, device_id: str, reported: Configuration, *, now: datetime
    ) -> None:
        """Set what the device reported (recording the device if new)."""
        await self._upsert(
            tenant_id,
            device_id,
            {
                "$set": {_REPORTED: _pairs(reported), "reported_ts": now},
                "$setOnInsert": {_CONFIGURED: [], "updated_ts": now, "revision": 0},
            },
        )

    async def set_deployment_id(
        self,
        tenant_id: str,
        device_id: str,
        deployment_id: str,
        *,
        effects: Sequence[Effect] = (),
    ) -> bool:
        """Record the device's latest configuration deployment, with `effects`; whether the
        device exists (nothing is written when it does not)."""

        async def work(session: AsyncClientSession) -> bool:
            result = await self._devices(tenant_id).update_one(
                {"_id": device_id}, {"$set": {"deployment_id": deployment_id}}, session=session
            )
            if result.matched_count != 1:
                return False
            await self._outbox.add(effects, session=session)
            return True

        return await atomically(self._client, work)

    async def delete_device(self, tenant_id: str, device_id: str) -> bool:
        """Forget a device; whether it existed."""
        result = await self._devices(tenant_id).delete_one({"_id": device_id})
        return result.deleted_count == 1

    async def delete_tenant(self, tenant_id: str) -> int:
        """Forget every device of a tenant; how many there were."""
        result = await self._devices(tenant_id).delete_many({})
        return result.deleted_count
