"""The deviceconfig store on MongoDB: one document per device in `devices`.

A configuration is stored as a list of `{"key", "value"}` pairs, as Mender stores it:
keys are free text, and a key such as `a.b` or `$x` could not be a field name.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection
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


class MongoStore:
    """Device configurations on one Mongo database; every query is tenant-scoped."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    def _devices(self, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[DEVICES], tenant_id)

    async def _upsert(self, tenant_id: str, device_id: str, update: Document) -> None:
        devices = self._devices(tenant_id)
        try:
            await devices.update_one({"_id": device_id}, update, upsert=True)
        except DuplicateKeyError:
            # Two first writes raced, and the other one inserted: this one now updates.
            # A second clash means the id belongs to another tenant.
            try:
                await devices.update_one({"_id": device_id}, update, upsert=True)
            except DuplicateKeyError:
                raise DeviceIdTaken(device_id) from None

    async def get_device(self, tenant_id: str, device_id: str) -> DeviceConfiguration | None:
        """Return one device, or None."""
        doc = await self._devices(tenant_id).find_one({"_id": device_id})
        return _device(doc) if doc else None

    async def insert_device(self, tenant_id: str, device: DeviceConfiguration) -> None:
        """Record a new device; `DeviceIdTaken` if it exists."""
        doc: Document = {
            "_id": device.id,
            _CONFIGURED: _pairs(device.configured),
            _REPORTED: _pairs(device.reported),
            "updated_ts": device.updated_ts,
            "revision": device.revision,
        }
        try:
            await self._devices(tenant_id).insert_one(doc)
        except DuplicateKeyError:
            raise DeviceIdTaken(device.id) from None

    async def replace_configured(
        self, tenant_id: str, device_id: str, configured: Configuration, *, now: datetime
    ) -> None:
        """Set the desired configuration (recording the device if new)."""
        await self._upsert(
            tenant_id,
            device_id,
            {
                "$set": {_CONFIGURED: _pairs(configured), "updated_ts": now},
                "$inc": {"revision": 1},
            },
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

    async def set_deployment_id(self, tenant_id: str, device_id: str, deployment_id: str) -> bool:
        """Record the device's latest configuration deployment; whether the device exists."""
        result = await self._devices(tenant_id).update_one(
            {"_id": device_id}, {"$set": {"deployment_id": deployment_id}}
        )
        return result.matched_count == 1

    async def delete_device(self, tenant_id: str, device_id: str) -> bool:
        """Forget a device; whether it existed."""
        result = await self._devices(tenant_id).delete_one({"_id": device_id})
        return result.deleted_count == 1

    async def delete_tenant(self, tenant_id: str) -> int:
        """Forget every device of a tenant; how many there were."""
        result = await self._devices(tenant_id).delete_many({})
        return result.deleted_count
