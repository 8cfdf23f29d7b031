"""auditlogs' storage interface; `MongoStore` implements it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from services.auditlogs.models import AuditLog, LogFilter

__all__ = ["DataStore"]


class DataStore(Protocol):
    """Where audit events live; every method is confined to one tenant."""

    async def insert(
        self, tenant_id: str, log: AuditLog, *, event_id: str, expire_at: datetime
    ) -> bool:
        """Record an event under its id; False when that id is already recorded."""
        ...

    async def find(
        self, tenant_id: str, filter_: LogFilter, *, skip: int, limit: int
    ) -> list[AuditLog]:
        """Return one page of the matching events, in the filter's order of time."""
        ...

    async def count(self, tenant_id: str, filter_: LogFilter) -> int:
        """Count the matching events."""
        ...

    def stream(
        self, tenant_id: str, filter_: LogFilter, *, limit: int | None
    ) -> AsyncIterator[AuditLog]:
        """Yield the matching events in order, a batch at a time (at most `limit`)."""
        ...

    async def delete_tenant(self, tenant_id: str) -> int:
        """Delete every event of a tenant; how many there were."""
        ...
