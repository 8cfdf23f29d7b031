"""The MongoDB implementation of the deviceauth store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document, TenantCollection, atomically
from common.core.outbox import Effect, Outbox
from common.core.revocations import RevocationFeed, tenant_key, token_key
from services.deviceauth.models import (
    AuthSet,
    AuthStatus,
    Device,
    DeviceStatus,
    ExternalIdentity,
    Token,
)
from services.deviceauth.store import DataStore, DuplicateError
from services.deviceauth.store.indexes import AUTH_SETS, DEVICES, LIMITS, TOKENS

__all__ = ["MongoStore"]

T = TypeVar("T")

_DEVICE_FIELDS: Final = (
    "id_data",
    "id_data_sha256",
    "status",
    "created_ts",
    "updated_ts",
    "decommissioning",
    "provisioned",
    "revision",
    "check_in_time",
    "check_in_synced_ts",
)


def _device_doc(device: Device) -> Document:
    doc: Document = {"_id": device.id}
    for name in _DEVICE_FIELDS:
        doc[name] = getattr(device, name)
    doc["status"] = device.status.value
    if device.external is not None:
        doc["external"] = device.external.model_dump()
    return doc


def _device(doc: Mapping[str, Any]) -> Device:
    fields = {name: doc[name] for name in _DEVICE_FIELDS if doc.get(name) is not None}
    external = doc.get("external")
    return Device(
        id=doc["_id"],
        external=ExternalIdentity(**external) if external else None,
        **fields,
    )


def _auth_set_doc(auth_set: AuthSet) -> Document:
    return {
        "_id": auth_set.id,
        "device_id": auth_set.device_id,
        "id_data": auth_set.id_data,
        "id_data_sha256": auth_set.id_data_sha256,
        "pubkey": auth_set.pubkey,
        "status": auth_set.status.value,
        "ts": auth_set.ts,
    }


def _auth_set(doc: Mapping[str, Any]) -> AuthSet:
    return AuthSet(
        id=doc["_id"],
        device_id=doc["device_id"],
        id_data=doc["id_data"],
        id_data_sha256=doc["id_data_sha256"],
        pubkey=doc["pubkey"],
        status=AuthStatus(doc["status"]),
        ts=doc["ts"],
    )


class MongoStore(DataStore):
    """Stores deviceauth's collections; every query is scoped to one tenant."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        *,
        outbox: Outbox,
        revocations: RevocationFeed,
        clock: Callable[[], datetime] | None = None,
        session: AsyncClientSession | None = None,
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox
        self._revocations = revocations
        # When tokens are revoked (tests move it by hand, as they move token issuing).
        self._clock = clock or (lambda: datetime.now(UTC))
        self._session = session

    def _coll(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    async def atomically(self, work: Callable[[DataStore], Awaitable[T]]) -> T:
        """Run `work` with a store bound to one transaction (retried on transient conflicts)."""
        if self._session is not None:
            return await work(self)
        return await atomically(self._client, lambda session: work(self._bound(session)))

    def _bound(self, session: AsyncClientSession) -> MongoStore:
        return MongoStore(
            self._client,
            self._db,
            outbox=self._outbox,
            revocations=self._revocations,
            clock=self._clock,
            session=session,
        )

    async def add_effects(self, effects: Sequence[Effect]) -> None:
        """Record cross-service effects (in the current transaction, if any)."""
        await self._outbox.add(effects, session=self._session)

    # -- devices ---------------------------------------------------------------------------

    async def insert_device(self, tenant_id: str, device: Device) -> None:
        """Insert a device; DuplicateError when its identity exists."""
        try:
            await self._coll(DEVICES, tenant_id).insert_one(
                _device_doc(device), session=self._session
            )
        except DuplicateKeyError as exc:
            raise DuplicateError("device identity exists") from exc

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """Return a device (without auth sets) or None."""
        doc = await self._coll(DEVICES, tenant_id).find_one(
            {"_id": device_id}, session=self._session
        )
        return _device(doc) if doc else None

    async def get_devices(self, tenant_id: str, device_ids: Sequence[str]) -> list[Device]:
        """Return those of these devices that exist (without auth sets), in no given order."""
        cursor = self._coll(DEVICES, tenant_id).find(
            {"_id": {"$in": list(device_ids)}}, session=self._session
        )
        return [_device(doc) async for doc in cursor]

    async def get_device_by_identity(self, tenant_id: str, id_data_sha256: str) -> Device | None:
        """Return the device with this identity key, or None."""
        doc = await self._coll(DEVICES, tenant_id).find_one(
            {"id_data_sha256": id_data_sha256}, session=self._session
        )
        return _device(doc) if doc else None

    async def list_devices(
        self,
        tenant_id: str,
        *,
        statuses: Sequence[DeviceStatus],
        ids: Sequence[str],
        skip: int,
        limit: int,
    ) -> list[Device]:
        """Devices matching the filters (empty filter = any), by status then id."""
        query: Document = {}
        if statuses:
            query["status"] = {"$in": [s.value for s in statuses]}
        if ids:
            query["_id"] = {"$in": list(ids)}
        cursor = (
            self._coll(DEVICES, tenant_id)
            .find(query, session=self._session)
            .sort([("status", ASCENDING), ("_id", ASCENDING)])
            .skip(skip)
            .limit(limit)
        )
        return [_device(doc) async for doc in cursor]

    async def count_devices(self, tenant_id: str, *, status: DeviceStatus | None) -> int:
        """Count devices, optionally of one status."""
        query: Document = {} if status is None else {"status": status.value}
        return await self._coll(DEVICES, tenant_id).count_documents(query, session=self._session)

    async def update_device_status(
        self, tenant_id: str, device_id: str, *, status: DeviceStatus, now: datetime
    ) -> Device | None:
        """Set the status, bump the revision; return the updated device or None."""
        coll = self._coll(DEVICES, tenant_id)
        # update + read rather than findAndModify: the embedded server answers the latter
        # with a collection scan, the former two by _id.
        result = await coll.update_one(
            {"_id": device_id},
            {"$set": {"status": status.value, "updated_ts": now}, "$inc": {"revision": 1}},
            session=self._session,
        )
        if result.matched_count == 0:
            return None
        doc = await coll.find_one({"_id": device_id}, session=self._session)
        return _device(doc) if doc else None

    async def set_device_provisioned(
        self, tenant_id: str, device_id: str, *, provisioned: bool
    ) -> bool:
        """Set the provisioned flag; False when the device does not exist."""
        result = await self._coll(DEVICES, tenant_id).update_one(
            {"_id": device_id}, {"$set": {"provisioned": provisioned}}, session=self._session
        )
        return result.matched_count == 1

    async def set_device_external(
        self, tenant_id: str, device_id: str, *, external: ExternalIdentity
    ) -> bool:
        """Replace the external identity; False when the device does not exist."""
        result = await self._coll(DEVICES, tenant_id).update_one(
            {"_id": device_id},
            {"$set": {"external": external.model_dump()}},
            session=self._session,
        )
        return result.matched_count == 1

    async def touch_check_in(
        self, tenant_id: str, device_id: str, *, now: datetime, last: datetime | None
    ) -> bool:
        """Set check_in_time to now if it is still `last` (None: never checked in)."""
        result = await self._coll(DEVICES, tenant_id).update_one(
            {"_id": device_id, "check_in_time": last},
            {"$set": {"check_in_time": now}},
            session=self._session,
        )
        return result.modified_count == 1

    async def touch_check_ins(
        self, tenant_id: str, devices: Sequence[tuple[str, datetime | None]], *, now: datetime
    ) -> None:
        """`touch_check_in` for each (device id, last), in one write."""
        if devices:
            await self._coll(DEVICES, tenant_id).write_each(
                [
                    ({"_id": device_id, "check_in_time": last}, {"$set": {"check_in_time": now}})
                    for device_id, last in devices
                ],
                session=self._session,
            )

    async def sync_check_in(
        self, tenant_id: str, device_id: str, *, now: datetime, synced: datetime | None
    ) -> bool:
        """Set check-in and sync times to now if the last sync is still `synced`."""
        result = await self._coll(DEVICES, tenant_id).update_one(
            {"_id": device_id, "check_in_synced_ts": synced},
            {"$set": {"check_in_time": now, "check_in_synced_ts": now}},
            session=self._session,
        )
        return result.modified_count == 1

    async def admit_device(
        self, tenant_id: str, device_id: str, *, now: datetime, newly: bool, check_in: bool
    ) -> None:
        """Mark the device accepted and provisioned in one write: `newly` accepted bumps its
        revision and `updated_ts`; `check_in` sets its check-in and sync times to `now`."""
        fields: Document = {"status": DeviceStatus.ACCEPTED.value, "provisioned": True}
        update: Document = {"$set": fields}
        if newly:
            fields["updated_ts"] = now
            update["$inc"] = {"revision": 1}
        if check_in:
            fields["check_in_time"] = now
            fields["check_in_synced_ts"] = now
        await self._coll(DEVICES, tenant_id).update_one(
            {"_id": device_id}, update, session=self._session
        )

    async def delete_device(self, tenant_id: str, device_id: str) -> bool:
        """Delete the device document; False when it did not exist."""
        result = await self._coll(DEVICES, tenant_id).delete_one(
            {"_id": device_id}, session=self._session
        )
        return result.deleted_count == 1

    # -- auth sets -------------------------------------------------------------------------

    async def insert_auth_set(self, tenant_id: str, auth_set: AuthSet) -> None:
        """Insert an auth set; DuplicateError when identity + key exist."""
        try:
            await self._coll(AUTH_SETS, tenant_id).insert_one(
                _auth_set_doc(auth_set), session=self._session
            )
        except DuplicateKeyError as exc:
            raise DuplicateError("auth set exists") from exc

    async def get_auth_set(
        self, tenant_id: str, auth_id: str, *, device_id: str | None = None
    ) -> AuthSet | None:
        """Return an auth set (of the device, when given) or None."""
        query: Document = {"_id": auth_id}
        if device_id is not None:
            query["device_id"] = device_id
        doc = await self._coll(AUTH_SETS, tenant_id).find_one(query, session=self._session)
        return _auth_set(doc) if doc else None

    async def find_auth_set(
        self, tenant_id: str, *, id_data_sha256: str, pubkey: str
    ) -> AuthSet | None:
        """Return the auth set of this identity and key, or None."""
        doc = await self._coll(AUTH_SETS, tenant_id).find_one(
            {"id_data_sha256": id_data_sha256, "pubkey": pubkey}, session=self._session
        )
        return _auth_set(doc) if doc else None

    async def list_auth_sets(self, tenant_id: str, device_ids: Sequence[str]) -> list[AuthSet]:
        """Auth sets of the devices, oldest first."""
        if not device_ids:
            return []
        cursor = (
            self._coll(AUTH_SETS, tenant_id)
            .find({"device_id": {"$in": list(device_ids)}}, session=self._session)
            .sort([("ts", ASCENDING), ("_id", ASCENDING)])
        )
        return [_auth_set(doc) async for doc in cursor]

    async def set_auth_set_status(self, tenant_id: str, auth_id: str, status: AuthStatus) -> None:
        """Change the status of an auth set."""
        await self._coll(AUTH_SETS, tenant_id).update_one(
            {"_id": auth_id}, {"$set": {"status": status.value}}, session=self._session
        )

    async def accept_auth_set(
        self, tenant_id: str, auth_id: str, *, allowed: frozenset[AuthStatus]
    ) -> bool:
        """Accept an auth set whose status is one of `allowed`; False if it is not."""
        result = await self._coll(AUTH_SETS, tenant_id).update_one(
            {"_id": auth_id, "status": {"$in": sorted(s.value for s in allowed)}},
            {"$set": {"status": AuthStatus.ACCEPTED.value}},
            session=self._session,
        )
        return result.matched_count == 1

    async def stamp_accepted_auth_set(self, tenant_id: str, auth_id: str, *, now: datetime) -> bool:
        """Record that a token is issued for an accepted auth set; False if not accepted."""
        result = await self._coll(AUTH_SETS, tenant_id).update_one(
            {"_id": auth_id, "status": AuthStatus.ACCEPTED.value},
            {"$set": {"token_ts": now}},
            session=self._session,
        )
        return result.matched_count == 1

    async def delete_auth_set(self, tenant_id: str, auth_id: str) -> bool:
        """Delete one auth set; False when it did not exist."""
        result = await self._coll(AUTH_SETS, tenant_id).delete_one(
            {"_id": auth_id}, session=self._session
        )
        return result.deleted_count == 1

    async def delete_auth_sets_of_device(self, tenant_id: str, device_id: str) -> int:
        """Delete every auth set of a device; return how many."""
        result = await self._coll(AUTH_SETS, tenant_id).delete_many(
            {"device_id": device_id}, session=self._session
        )
        return result.deleted_count

    # -- tokens ----------------------------------------------------------------------------

    async def save_token(self, tenant_id: str, token: Token) -> None:
        """Store an issued token (replacing one with the same id)."""
        await self._coll(TOKENS, tenant_id).replace_one(
            {"_id": token.id},
            {
                "_id": token.id,
                "sub": token.device_id,
                "iat": {"time": token.issued_at},
                "exp": {"time": token.expires_at},
            },
            upsert=True,
            session=self._session,
        )

    async def get_token(self, tenant_id: str, token_id: str) -> Token | None:
        """Return a stored token or None."""
        doc = await self._coll(TOKENS, tenant_id).find_one({"_id": token_id}, session=self._session)
        if doc is None:
            return None
        return Token(
            id=doc["_id"],
            device_id=doc["sub"],
            issued_at=doc["iat"]["time"],
            expires_at=doc["exp"]["time"],
        )

    async def delete_token(self, tenant_id: str, token_id: str) -> bool:
        """Delete one token, revoking it; False when it did not exist."""
        return await self._revoke(tenant_id, {"_id": token_id}) == 1

    async def delete_tokens(
        self,
        tenant_id: str,
        *,
        device_id: str | None = None,
        token_ids: Sequence[str] | None = None,
    ) -> int:
        """Delete the tenant's tokens, of one device or with the given ids, revoking them."""
        query: Document = {}
        if device_id is not None:
            query["sub"] = device_id
        if token_ids is not None:
            if not token_ids:
                return 0
            query["_id"] = {"$in": list(token_ids)}
        return await self._revoke(tenant_id, query)

    async def issue_time(self, tenant_id: str, token_id: str, *, now: datetime) -> int:
        """The `iat` of a token issued now: after any revocation of its id or tenant."""
        return await self._revocations.issue_time(
            now, [token_key(token_id), tenant_key(tenant_id)], session=self._session
        )

    async def _revoke(self, tenant_id: str, query: Document) -> int:
        # The deletion and the revocations that tell the gateways are one transaction.
        if self._session is None:
            return await atomically(
                self._client, lambda session: self._bound(session)._revoke(tenant_id, query)
            )
        return await self._revocations.revoke(
            self._coll(TOKENS, tenant_id),
            query,
            now=self._clock(),
            expiry=lambda doc: doc["exp"]["time"],
            session=self._session,
        )

    # -- limits ----------------------------------------------------------------------------

    async def get_limit(self, tenant_id: str, name: str) -> int | None:
        """Return a limit's value, or None when it is not set."""
        doc = await self._coll(LIMITS, tenant_id).find_one({"name": name}, session=self._session)
        return int(doc["value"]) if doc else None

    async def put_limit(self, tenant_id: str, name: str, value: int) -> None:
        """Set a limit."""
        await self._coll(LIMITS, tenant_id).update_one(
            {"name": name}, {"$set": {"value": value}}, upsert=True, session=self._session
        )

    async def delete_limit(self, tenant_id: str, name: str) -> None:
        """Remove a limit."""
        await self._coll(LIMITS, tenant_id).delete_one({"name": name}, session=self._session)
