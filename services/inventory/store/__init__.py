"""The inventory's storage interface; `MongoStore` implements it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from services.inventory.models import (
    Device,
    DeviceChange,
    DeviceQuery,
    FilterAttribute,
    StatusStatistics,
    UpdateResult,
    WriteOutcome,
)

__all__ = ["DataStore"]


class DataStore(Protocol):
    """Where device inventories live; every method is confined to one tenant."""

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """Return one device, or None."""
        ...

    async def write_device(
        self, tenant_id: str, device_id: str, change: DeviceChange
    ) -> WriteOutcome:
        """Apply an attribute change to one device atomically, subject to its conditions."""
        ...

    async def set_statuses(
        self,
        tenant_id: str,
        *,
        status: str,
        devices: Sequence[tuple[str, int]],
        now: datetime,
        check_ins: Mapping[str, datetime] | None = None,
    ) -> UpdateResult:
        """Set identity `status` on each (id, revision) whose stored revision is older, and
        `system/check_in_time` from `check_ins` where it is later than the stored one."""
        ...

    async def delete_devices(self, tenant_id: str, device_ids: Sequence[str]) -> int:
        """Delete devices; return how many existed."""
        ...

    async def search(self, tenant_id: str, query: DeviceQuery) -> tuple[list[Device], int]:
        """Return one page of matching devices and the total number of matches."""
        ...

    async def set_group(
        self, tenant_id: str, *, device_ids: Sequence[str], group: str
    ) -> UpdateResult:
        """Put existing devices into a group (matched = found, updated = moved)."""
        ...

    async def unset_group(
        self, tenant_id: str, *, group: str, device_ids: Sequence[str] | None = None
    ) -> UpdateResult:
        """Take devices (all of the group's when `device_ids` is None) out of a group."""
        ...

    async def list_groups(self, tenant_id: str, *, status: str | None = None) -> list[str]:
        """Names of the groups in use, optionally among devices with an identity status."""
        ...

    async def list_group_devices(
        self, tenant_id: str, *, group: str, skip: int, limit: int
    ) -> tuple[list[str], int]:
        """One page of the ids of a group's devices and the group's size."""
        ...

    async def filter_attributes(
        self, tenant_id: str, *, sample: int, limit: int
    ) -> list[FilterAttribute]:
        """Attributes present on (a sample of) the devices, most common first."""
        ...

    async def status_statistics(self, tenant_id: str) -> StatusStatistics:
        """Count accepted and pending devices per tier."""
        ...

    async def add_tenant(self, tenant_id: str, *, now: datetime) -> None:
        """Record a tenant (idempotent)."""
        ...
