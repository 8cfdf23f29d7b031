"""MongoDB access shared by every store: the client, index set-up, tenant scoping.

Every query a store makes goes through `TenantCollection`, which adds the caller's
`tenant_id` to filters and new documents, so one tenant can never read another's data.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

from pymongo import (
    AsyncMongoClient,
    IndexModel,
    InsertOne,
    ReturnDocument,
    UpdateOne,
    monitoring,
)
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.command_cursor import AsyncCommandCursor
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)

from common.core.errors import ServiceUnavailable
from common.core.metrics import count_database_operation

__all__ = [
    "DUPLICATE_KEY",
    "Document",
    "TenantCollection",
    "TransactionConflict",
    "add_command_listener",
    "atomically",
    "create_client",
    "ensure_indexes",
    "ping",
    "transaction",
]

Document = dict[str, Any]
_Filter = Mapping[str, Any]
_Session = AsyncClientSession | None
_T = TypeVar("_T")


class _OperationCounter(monitoring.CommandListener):
    """Counts each command towards the request that caused it (`common.core.metrics`)."""

    def started(self, _event: monitoring.CommandStartedEvent) -> None:
        count_database_operation()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_listeners: list[monitoring.CommandListener] = [_OperationCounter()]


def add_command_listener(listener: monitoring.CommandListener) -> None:
    """Watch every command of clients created from now on (the test suite's scoping check)."""
    _listeners.append(listener)


def create_client(url: str) -> AsyncMongoClient[Document]:
    """Create the async client; timezone-aware datetimes, short server selection.

    Pooled connections are dropped after 4 idle minutes, before a server or a load balancer
    in between closes them (the embedded server does after 5): a write on a connection
    closed under it fails when retryable writes are off.
    """
    return AsyncMongoClient(
        url,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=5000,
        maxIdleTimeMS=240_000,
        connect=False,
        event_listeners=list(_listeners),
    )


async def ping(db: AsyncDatabase[Document]) -> bool:
    """Return whether the database answers."""
    try:
        await db.command("ping")
    except Exception:  # any driver failure means "not healthy" for a health check
        return False
    return True


async def ensure_indexes(
    db: AsyncDatabase[Document], indexes: Mapping[str, Sequence[IndexModel]]
) -> None:
    """Create the indexes a service needs (idempotent; runs at start-up)."""
    for collection, models in indexes.items():
        if models:
            await db[collection].create_indexes(list(models))


@asynccontextmanager
async def transaction(client: AsyncMongoClient[Document]) -> AsyncIterator[AsyncClientSession]:
    """Run the block in one multi-document transaction (committed on normal exit)."""
    async with client.start_session() as session, await session.start_transaction():
        yield session


DUPLICATE_KEY: Final = 11000  # the server's code for a unique index's value taken
_TRANSACTION_ATTEMPTS: Final = 10
# Seconds: the pause before another attempt is random, up to this doubled on each attempt
# and at most the cap (about 2 s in all before giving up).
_CONFLICT_BACKOFF: Final = 0.005
_CONFLICT_BACKOFF_CAP: Final = 0.5


class TransactionConflict(ServiceUnavailable):
    """A transaction kept conflicting with concurrent ones; the caller should retry (503)."""

    def __init__(self) -> None:
        super().__init__("the change conflicts with concurrent changes; retry")


async def atomically(
    client: AsyncMongoClient[Document],
    work: Callable[[AsyncClientSession], Awaitable[_T]],
    *,
    attempts: int = _TRANSACTION_ATTEMPTS,
) -> _T:
    """Run `work` in one transaction, again from the start when it conflicts with another.

    A conflict (the `TransientTransactionError` label: another transaction wrote the same
    document first) aborts the attempt with nothing written; after a short random pause the
    work runs again on fresh data. `TransactionConflict` when every attempt conflicted.
    """
    attempt = 1
    while True:
        try:
            async with transaction(client) as session:
                return await work(session)
        except PyMongoError as exc:
            if not exc.has_error_label("TransientTransactionError"):
                raise
            if attempt >= attempts:
                raise TransactionConflict() from exc
        pause = min(_CONFLICT_BACKOFF * 2**attempt, _CONFLICT_BACKOFF_CAP)
        await asyncio.sleep(random.uniform(0, pause))
        attempt += 1


def _require_transaction(session: AsyncClientSession) -> None:
    if not session.in_transaction:
        raise RuntimeError("a read-and-write of one document needs the caller's transaction")


class TenantCollection:
    """A collection whose every operation is confined to one tenant's documents."""

    __slots__ = ("_coll", "tenant_id")

    def __init__(self, collection: AsyncCollection[Document], tenant_id: str) -> None:
        self._coll = collection
        self.tenant_id = tenant_id

    def scope(self, filter_: _Filter | None = None) -> Document:
        """Return the filter restricted to this tenant."""
        return {**(filter_ or {}), "tenant_id": self.tenant_id}

    def _doc(self, document: Mapping[str, Any]) -> Document:
        return {**document, "tenant_id": self.tenant_id}

    def find(
        self, filter_: _Filter | None = None, *args: Any, **kwargs: Any
    ) -> AsyncCursor[Document]:
        """Find this tenant's documents."""
        return self._coll.find(self.scope(filter_), *args, **kwargs)

    async def find_one(
        self, filter_: _Filter | None = None, *args: Any, **kwargs: Any
    ) -> Document | None:
        """Find one of this tenant's documents."""
        return await self._coll.find_one(self.scope(filter_), *args, **kwargs)

    async def count_documents(self, filter_: _Filter | None = None, **kwargs: Any) -> int:
        """Count this tenant's matching documents."""
        return await self._coll.count_documents(self.scope(filter_), **kwargs)

    async def distinct(self, key: str, filter_: _Filter | None = None, **kwargs: Any) -> list[Any]:
        """Distinct values of `key` among this tenant's matching documents."""
        return await self._coll.distinct(key, self.scope(filter_), **kwargs)

    async def insert_one(self, document: Mapping[str, Any], **kwargs: Any) -> InsertOneResult:
        """Insert a document owned by this tenant."""
        return await self._coll.insert_one(self._doc(document), **kwargs)

    async def insert_many(
        self, documents: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> InsertManyResult:
        """Insert documents owned by this tenant."""
        return await self._coll.insert_many([self._doc(d) for d in documents], **kwargs)

    async def insert_new(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Insert the documents whose `_id` is not taken yet, in one statement; return how
        many were inserted (the others are left as they are)."""
        if not documents:
            return 0
        try:
            return len((await self.insert_many(documents, ordered=False)).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))

    async def update_one(
        self, filter_: _Filter, update: Any, *, upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        """Update one of this tenant's documents (an upsert creates it within the tenant)."""
        return await self._coll.update_one(self.scope(filter_), update, upsert=upsert, **kwargs)

    async def update_many(self, filter_: _Filter, update: Any, **kwargs: Any) -> UpdateResult:
        """Update this tenant's matching documents."""
        return await self._coll.update_many(self.scope(filter_), update, **kwargs)

    async def write_each(
        self,
        updates: Sequence[tuple[_Filter, Any]],
        *,
        inserts: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> BulkWriteResult:
        """Insert documents owned by this tenant and update one of its documents per (filter,
        update), in one unordered bulk write; the index of a write error counts the inserts
        first."""
        ops: list[InsertOne[Document] | UpdateOne] = [InsertOne(self._doc(d)) for d in inserts]
        ops += [UpdateOne(self.scope(filter_), update) for filter_, update in updates]
        return await self._coll.bulk_write(ops, ordered=False, **kwargs)

    async def replace_one(
        self, filter_: _Filter, document: Mapping[str, Any], **kwargs: Any
    ) -> UpdateResult:
        """Replace one of this tenant's documents."""
        return await self._coll.replace_one(self.scope(filter_), self._doc(document), **kwargs)

    async def delete_one(self, filter_: _Filter, **kwargs: Any) -> DeleteResult:
        """Delete one of this tenant's documents."""
        return await self._coll.delete_one(self.scope(filter_), **kwargs)

    async def delete_many(self, filter_: _Filter, **kwargs: Any) -> DeleteResult:
        """Delete this tenant's matching documents."""
        return await self._coll.delete_many(self.scope(filter_), **kwargs)

    async def find_one_and_update(
        self,
        filter_: _Filter,
        update: Any,
        *,
        session: AsyncClientSession,
        return_document: bool = ReturnDocument.AFTER,
    ) -> Document | None:
        """Update one of this tenant's documents, selected by `_id` (and any further
        conditions), in the caller's transaction; return it after the update (or before).

        A write then a read of the same `_id` in one transaction: as atomic as
        `findAndModify`, which the embedded server answers by scanning the whole collection
        for its write.
        """
        _require_transaction(session)
        if return_document is ReturnDocument.BEFORE:
            before = await self.find_one(filter_, session=session)
            if before is not None:
                await self.update_one({"_id": before["_id"]}, update, session=session)
            return before
        if not (await self.update_one(filter_, update, session=session)).matched_count:
            return None
        return await self.find_one({"_id": filter_["_id"]}, session=session)

    async def find_one_and_delete(
        self, filter_: _Filter, *, session: AsyncClientSession
    ) -> Document | None:
        """Delete one of this tenant's documents in the caller's transaction; return it
        (a read then a delete by `_id`, for the reason `find_one_and_update` gives)."""
        _require_transaction(session)
        doc = await self.find_one(filter_, session=session)
        if doc is not None:
            await self.delete_one({"_id": doc["_id"]}, session=session)
        return doc

    async def aggregate(
        self, pipeline: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> AsyncCommandCursor[Document]:
        """Run a pipeline over this tenant's documents only."""
        return await self._coll.aggregate([{"$match": self.scope()}, *pipeline], **kwargs)
