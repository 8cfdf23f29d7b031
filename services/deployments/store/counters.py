"""A deployment's statistics: one counters document, moved with its device deployments.

A device deployment's status and its count in the statistics change in one transaction, so
no crash keeps one without the other. Every such transaction of a deployment writes its
counters document: this process runs them one at a time per deployment (concurrent ones
would conflict and start over); conflicts with other replicas are retried by `atomically`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document, atomically
from common.core.outbox import Outbox
from services.deployments.models import STAT_NAMES
from services.deployments.store import StatsChange
from services.deployments.store.base import MongoCollections
from services.deployments.store.indexes import DEPLOYMENT_STATS, DEPLOYMENTS

__all__ = ["DeploymentCounters"]

_FINISHING: Final = ("success", "failure", "already-installed", "noartifact", "aborted")
_FINISHING_ALL: Final = (*_FINISHING, "decommissioned")
_STATUS_RANK: Final = {"pending": 0, "inprogress": 1, "finished": 2}
_T = TypeVar("_T")


def _derived_status(counters: Mapping[str, Any]) -> str:
    """The status the counters call for (Mender's rule)."""
    stats = counters.get("stats") or {}
    done = sum(int(stats.get(name, 0)) for name in _FINISHING_ALL)
    if done >= int(counters.get("max_devices", 0)):
        return "finished"
    if any(int(stats.get(name, 0)) > 0 for name in STAT_NAMES if name != "pending"):
        return "inprogress"
    return "pending"


class _Serializer:
    """Runs the blocks of one key one at a time in this process; idle keys are forgotten."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._users: Counter[tuple[str, str]] = Counter()

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Wait for the key's turn and hold it for the block."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]


class DeploymentCounters(MongoCollections):
    """The counters of the deployments and the serial order of their transactions.

    The deployment store and the device deployment store share it: composed into one data
    store, they share one instance, so one order per deployment in this process.
    """

    def __init__(self, db: AsyncDatabase[Document], *, outbox: Outbox) -> None:
        super().__init__(db, outbox=outbox)
        self._serial = _Serializer()

    async def _serially(
        self,
        tenant_id: str,
        deployment_id: str,
        work: Callable[[AsyncClientSession], Awaitable[_T]],
    ) -> _T:
        """Run `work` as one transaction, after the deployment's earlier ones in this process."""
        async with self._serial.hold((tenant_id, deployment_id)):
            return await atomically(self._db.client, work)

    async def _apply(
        self,
        tenant_id: str,
        deployment_id: str,
        change: StatsChange,
        *,
        require_room: bool,
        session: AsyncClientSession,
    ) -> bool:
        """`$inc` on the counters document, then a forward-only status move if due."""
        increments: dict[str, int] = {}
        if change.decrement:
            increments[f"stats.{change.decrement}"] = -1
        if change.increment:
            key = f"stats.{change.increment}"
            increments[key] = increments.get(key, 0) + 1
        if change.devices:
            increments["device_count"] = change.devices
            increments["room"] = -change.devices
        if change.add_size:
            increments["total_size"] = change.add_size
        query: Document = {"_id": deployment_id}
        if require_room:
            query["room"] = {"$gt": 0}
        counters = await self._c(DEPLOYMENT_STATS, tenant_id).find_one_and_update(
            query, {"$inc": increments}, session=session
        )
        if counters is None:
            return False
        await self._advance(tenant_id, deployment_id, counters, session=session)
        return True

    async def _advance(
        self,
        tenant_id: str,
        deployment_id: str,
        counters: Mapping[str, Any],
        *,
        session: AsyncClientSession,
    ) -> None:
        """Move the status forward (pending → inprogress → finished), never back."""
        current = str(counters.get("status", "pending"))
        target = _derived_status(counters)
        if _STATUS_RANK[target] <= _STATUS_RANK.get(current, 0):
            return
        earlier = [s for s, rank in _STATUS_RANK.items() if rank < _STATUS_RANK[target]]
        changes: Document = {"status": target}
        if target == "finished":
            changes.update(active=False, finished=datetime.now(UTC))
        await self._c(DEPLOYMENTS, tenant_id).update_one(
            {"_id": deployment_id, "status": {"$in": earlier}}, {"$set": changes}, session=session
        )
        await self._c(DEPLOYMENT_STATS, tenant_id).update_one(
            {"_id": deployment_id, "status": {"$in": earlier}},
            {"$set": {"status": target}},
            session=session,
        )
