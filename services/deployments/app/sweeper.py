"""Storage hygiene: what interrupted uploads leave in artifact storage is removed.

A crash can leave a partial upload (a `.part` file, an S3 multipart upload) and an object no
artifact refers to (stored, then the process died before recording the artifact; or the
artifact was deleted, then the process died before removing its file). One replica at a
time sweeps: the periodic sweep is a named lease (`common.core.leases`) that its holder
keeps from turn to turn and another replica takes only once it lapses. A sweep is idempotent
all the same: two at once would each skip what the other removed first.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from common.core.leases import LeaseTerms
from services.deployments.storage import (
    InvalidKey,
    Storage,
    StoredObject,
    object_key,
    validate_key,
)
from services.deployments.store import DataStore

__all__ = ["StorageSweeper"]

_log = logging.getLogger("deployments.sweeper")

# Objects looked up in the database per query.
_BATCH: Final = 500
_RAW_SUFFIX: Final = ".raw"
_LOCK: Final = "storage-sweep"


def _object_id(key: str) -> str | None:
    """The id in a key this service writes (`[tenant/]<uuid>[.raw]`); None for other keys."""
    try:
        segments = validate_key(key).split("/")
    except InvalidKey:
        return None
    if len(segments) > 2:
        return None
    name = segments[-1].removesuffix(_RAW_SUFFIX)
    try:
        canonical = str(uuid.UUID(name))
    except ValueError:
        return None
    return name if name == canonical else None


class StorageSweeper:
    """Removes stale partial uploads and the objects nothing refers to."""

    def __init__(
        self,
        store: DataStore,
        storage: Storage,
        *,
        partial_max_age: timedelta,
        orphan_max_age: timedelta,
    ) -> None:
        self._store = store
        self._storage = storage
        self._partial_max_age = partial_max_age
        self._orphan_max_age = orphan_max_age

    async def sweep(self) -> list[StoredObject]:
        """Sweep once; returns what was removed (partial uploads first)."""
        now = datetime.now(UTC)
        removed = await self._storage.remove_stale_partials(idle_since=now - self._partial_max_age)
        for item in removed:
            _log.info(
                "removed partial upload %s: %d bytes, idle since %s",
                item.key,
                item.size,
                item.modified.isoformat(),
            )
        stored_before = now - self._orphan_max_age
        batch: list[StoredObject] = []
        async for item in self._storage.list_objects():
            if item.modified < stored_before and _object_id(item.key) is not None:
                batch.append(item)
            if len(batch) == _BATCH:
                removed += await self._remove_orphans(batch)
                batch = []
        if batch:
            removed += await self._remove_orphans(batch)
        return removed

    async def _remove_orphans(self, candidates: Sequence[StoredObject]) -> list[StoredObject]:
        """Delete the candidates no artifact, unfinished job or upload intent refers to."""
        ids = list({i for c in candidates if (i := _object_id(c.key)) is not None})
        referenced = {object_key(t, i) for t, i in await self._store.artifact_tenants(ids)}
        referenced.update(await self._store.unfinished_upload_keys(ids))
        removed = []
        for item in candidates:
            if item.key in referenced:
                continue
            await self._storage.delete(item.key)
            _log.info(
                "removed object %s: %d bytes, stored %s, nothing refers to it",
                item.key,
                item.size,
                item.modified.isoformat(),
            )
            removed.append(item)
        return removed

    async def turn(self, leases: LeaseTerms, *, interval: timedelta) -> bool:
        """Sweep if this process holds (or can take) the sweep's lease, for two intervals;
        whether it swept."""
        now = datetime.now(UTC)
        held = await self._store.claim_lock(
            _LOCK, owner=leases.owner, now=now, until=now + 2 * interval
        )
        if held:
            await self.sweep()
        return held

    async def run(self, leases: LeaseTerms, *, interval: timedelta) -> None:
        """Take a turn now and then every `interval`, until cancelled."""
        while True:
            try:
                await self.turn(leases, interval=interval)
            except Exception:  # the loop must survive a storage or database hiccup
                _log.exception("storage sweep failed")
            await asyncio.sleep(interval.total_seconds())
