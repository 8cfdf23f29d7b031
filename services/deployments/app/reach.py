"""Which devices a tenant's active deployments can reach, held in memory.

A device that is in no active deployment's device list has neither an active device
deployment nor a deployment to start: its `next` poll is a 204 without a database query.
Only polls of devices some active deployment lists go to the database, as before.

Each tenant's snapshot (the ids of its active deployments and the union of their device
lists) is loaded on the first poll that needs it. A deployment created by this process
drops the snapshot at once; one created by another replica is seen by `refresh_periodically`,
which compares every snapshot with the unfinished deployments in the database (one indexed
query per interval) and drops those that differ. So with several replicas a device polling
within one interval of a deployment's creation elsewhere may get a 204 once more; it never
misses an update under way, since a deployment that finishes only shrinks what the stale
snapshot sends to the database.

`fleetport_deployments_polls_total` counts the polls by where they were answered: `memory`
(a 204 from the snapshot) or `database` (the queries above; idle or not, which the request
metrics' status of the `next` route tells).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter

from services.deployments.store import DataStore

__all__ = ["Reach"]

_log = logging.getLogger("deployments.reach")
_POLLS: Final = Counter(
    "fleetport_deployments_polls_total",
    "Device polls for the next deployment, by where they were answered (memory, database).",
    ["answered_from"],
)
_FROM_MEMORY: Final = _POLLS.labels("memory")
_FROM_DATABASE: Final = _POLLS.labels("database")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    deployments: frozenset[str]
    # None: more devices than the snapshot may hold; every poll goes to the database.
    devices: frozenset[str] | None


class Reach:
    """The per-tenant snapshots, each at most `max_devices` device ids."""

    def __init__(self, store: DataStore, *, max_devices: int) -> None:
        self._store = store
        self._max_devices = max_devices
        self._snapshots: dict[str, _Snapshot] = {}
        # Bumped when a tenant's snapshot is dropped: a load that began before is not kept.
        self._versions: defaultdict[str, int] = defaultdict(int)
        self.hits = 0

    def forget(self, tenant_id: str) -> None:
        """Drop a tenant's snapshot (a deployment was created)."""
        self._versions[tenant_id] += 1
        self._snapshots.pop(tenant_id, None)

    async def unreachable(self, tenant_id: str, device_id: str) -> bool:
        """Whether no active deployment of the tenant lists the device."""
        snapshot = self._snapshots.get(tenant_id)
        if snapshot is None:
            snapshot = await self._load(tenant_id)
        if snapshot.devices is None or device_id in snapshot.devices:
            return False
        self.hits += 1
        _FROM_MEMORY.inc()
        return True

    @staticmethod
    def passed_on() -> None:
        """Count a poll that `unreachable` sent to the database.

        Counted by the caller that then queries, not by `unreachable`: the lean idle poll
        asks it first and, declining, hands the poll to the route, which asks again.
        """
        _FROM_DATABASE.inc()

    async def _load(self, tenant_id: str) -> _Snapshot:
        version = self._versions[tenant_id]
        lists = await self._store.active_device_lists(tenant_id)
        devices: set[str] | None = set()
        for device_list in lists.values():
            assert devices is not None
            devices.update(device_list)
            if len(devices) > self._max_devices:
                devices = None
                break
        snapshot = _Snapshot(frozenset(lists), None if devices is None else frozenset(devices))
        if self._versions[tenant_id] == version:
            self._snapshots[tenant_id] = snapshot
        return snapshot

    async def refresh(self) -> None:
        """Drop every snapshot whose active deployments are no longer the database's."""
        unfinished: defaultdict[str, set[str]] = defaultdict(set)
        for tenant_id, deployment_id in await self._store.unfinished_deployments():
            unfinished[tenant_id].add(deployment_id)
        for tenant_id, snapshot in list(self._snapshots.items()):
            if snapshot.deployments != unfinished.get(tenant_id, set()):
                self.forget(tenant_id)

    async def refresh_periodically(self, interval: float) -> None:
        """`refresh` every `interval` seconds, for deployments other replicas create."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                _log.exception("refreshing the active deployments failed; retrying")
