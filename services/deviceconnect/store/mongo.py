"""MongoDB implementation of the deviceconnect store (the only module using pymongo/bson)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime

from bson import Binary
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection, transaction
from common.core.outbox import Effect, Outbox
from services.deviceconnect.models import ConnectionStatus, Device, Session, SessionKind
from services.deviceconnect.store.indexes import DEVICES, RECORDINGS, SESSIONS

__all__ = ["MongoStore"]

_DEVICE_FIELDS = {"_id": 1, "status": 1, "version": 1, "instance": 1, "created_ts": 1}


def _device(doc: Document) -> Device:
    return Device(
        id=doc["_id"],
        status=ConnectionStatus(doc.get("status", ConnectionStatus.UNKNOWN)),
        version=doc.get("version", 0),
        instance=doc.get("instance", ""),
        created_ts=doc["created_ts"],
        updated_ts=doc.get("updated_ts", doc["created_ts"]),
    )


def _session(doc: Document) -> Session:
    return Session(
        id=doc["_id"],
        user_id=doc["user_id"],
        device_id=doc["device_id"],
        start_ts=doc["start_ts"],
        end_ts=doc.get("end_ts"),
        kinds=tuple(SessionKind(k) for k in doc.get("kinds", ())),
        bytes_recorded=doc.get("bytes_recorded", 0),
    )


def _unchanged(doc: Document) -> Document:
    """A filter that matches the device only while it is as `doc` shows it.

    Reads then writes guarded by it stand in for `findAndModify`, which the embedded server
    answers by scanning the collection. Every connection bumps `version`; a disconnection
    changes `status`.
    """
    return {"_id": doc["_id"], "version": doc.get("version"), "status": doc.get("status")}


class MongoStore:
    """deviceconnect's collections: `devices`, `sessions`, `recordings`, and the outbox."""

    def __init__(
        self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document], *, outbox: Outbox
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox

    def _coll(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    async def provision_devices(
        self, tenant_id: str, device_ids: Sequence[str], *, now: datetime
    ) -> None:
        """Record devices as disconnected, but for those known already (connected meanwhile,
        or provisioned before), in one statement."""
        status = ConnectionStatus.DISCONNECTED.value
        await self._coll(DEVICES, tenant_id).insert_new(
            [
                {"_id": d, "status": status, "version": 0, "created_ts": now, "updated_ts": now}
                for d in dict.fromkeys(device_ids)
            ]
        )

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """The device's connection state, or None."""
        doc = await self._coll(DEVICES, tenant_id).find_one({"_id": device_id})
        return None if doc is None else _device(doc)

    async def delete_device(self, tenant_id: str, device_id: str) -> Device | None:
        """Forget a device; return what was stored."""
        devices = self._coll(DEVICES, tenant_id)
        while True:
            doc = await devices.find_one({"_id": device_id})
            if doc is None:
                return None
            if (await devices.delete_one(_unchanged(doc))).deleted_count:
                return _device(doc)

    async def set_connected(
        self, tenant_id: str, device_id: str, *, instance: str, now: datetime
    ) -> tuple[int, Device | None]:
        """Mark the device connected here; return the new version and the previous state."""
        devices = self._coll(DEVICES, tenant_id)
        connected = {
            "status": ConnectionStatus.CONNECTED.value,
            "instance": instance,
            "updated_ts": now,
        }
        collided = False
        while True:
            previous = await devices.find_one({"_id": device_id})
            if previous is None:
                try:
                    await devices.insert_one(
                        {"_id": device_id, **connected, "version": 1, "created_ts": now}
                    )
                except DuplicateKeyError:
                    if collided:  # not created meanwhile: the id is another tenant's
                        raise
                    collided = True
                    continue  # created meanwhile: connect over what is there now
                return 1, None
            written = await devices.update_one(
                _unchanged(previous), {"$set": connected, "$inc": {"version": 1}}
            )
            if written.matched_count:
                return previous.get("version", 0) + 1, _device(previous)

    async def set_disconnected(
        self, tenant_id: str, device_id: str, *, version: int, now: datetime
    ) -> bool:
        """Mark the device disconnected if `version` is still its current connection."""
        result = await self._coll(DEVICES, tenant_id).update_one(
            {"_id": device_id, "version": version},
            {"$set": {"status": ConnectionStatus.DISCONNECTED.value, "updated_ts": now}},
        )
        return result.modified_count == 1

    async def connected_devices(self, tenant_id: str) -> list[Device]:
        """The tenant's devices marked connected."""
        cursor = self._coll(DEVICES, tenant_id).find(
            {"status": ConnectionStatus.CONNECTED.value}, {**_DEVICE_FIELDS, "updated_ts": 1}
        )
        return [_device(doc) async for doc in cursor]

    async def delete_tenant(self, tenant_id: str) -> None:
        """Delete everything stored for a tenant."""
        for name in (DEVICES, SESSIONS, RECORDINGS):
            await self._coll(name, tenant_id).delete_many({})

    async def add_effects(self, effects: Sequence[Effect]) -> None:
        """Record cross-service effects."""
        await self._outbox.add(effects)

    async def _with_effects(
        self,
        effects: Sequence[Effect],
        write: Callable[[AsyncClientSession | None], Awaitable[None]],
    ) -> None:
        if not effects:
            await write(None)
            return
        async with transaction(self._client) as session:
            await write(session)
            await self._outbox.add(effects, session=session)

    async def start_session(
        self,
        tenant_id: str,
        session: Session,
        *,
        expire_ts: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Record a new session expiring at `expire_ts` (its effects in the same transaction)."""
        # A session whose instance dies never ends: it still expires with its recordings.
        doc = {
            "_id": session.id,
            "user_id": session.user_id,
            "device_id": session.device_id,
            "start_ts": session.start_ts,
            "kinds": [k.value for k in session.kinds],
            "bytes_recorded": 0,
            "expire_ts": expire_ts,
        }

        async def write(tx: AsyncClientSession | None) -> None:
            await self._coll(SESSIONS, tenant_id).insert_one(doc, session=tx)

        await self._with_effects(effects, write)

    async def end_session(
        self,
        tenant_id: str,
        session: Session,
        *,
        expire_ts: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Record how a session ended (and its effects, in the same transaction)."""
        changes = {
            "end_ts": session.end_ts,
            "kinds": [k.value for k in session.kinds],
            "bytes_recorded": session.bytes_recorded,
            "expire_ts": expire_ts,
        }

        async def write(tx: AsyncClientSession | None) -> None:
            await self._coll(SESSIONS, tenant_id).update_one(
                {"_id": session.id}, {"$set": changes}, session=tx
            )

        await self._with_effects(effects, write)

    async def get_session(self, tenant_id: str, session_id: str) -> Session | None:
        """A session of the tenant, or None."""
        doc = await self._coll(SESSIONS, tenant_id).find_one({"_id": session_id})
        return None if doc is None else _session(doc)

    async def add_recording(
        self,
        tenant_id: str,
        session_id: str,
        *,
        seq: int,
        events: bytes,
        now: datetime,
        expire_ts: datetime,
    ) -> None:
        """Store one chunk of a session's recording."""
        await self._coll(RECORDINGS, tenant_id).insert_one(
            {
                "session_id": session_id,
                "seq": seq,
                "events": Binary(events),
                "created_ts": now,
                "expire_ts": expire_ts,
            }
        )

    async def recording(self, tenant_id: str, session_id: str) -> AsyncIterator[bytes]:
        """A session's recording chunks in order."""
        cursor = (
            self._coll(RECORDINGS, tenant_id)
            .find({"session_id": session_id}, {"events": 1})
            .sort("seq", ASCENDING)
            .batch_size(16)
        )
        async for doc in cursor:
            yield bytes(doc["events"])
