"""Recording audit events from the peers, and listing and exporting them for operators."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from common.core.pages import Page
from services.auditlogs.app.export import csv_chunks
from services.auditlogs.clients import UsersClient
from services.auditlogs.models import AuditLog, LogFilter, UserDetails
from services.auditlogs.store import DataStore

__all__ = ["AuditLogsApp"]

# Ids of events delivered with an idempotency key are derived from it within the tenant.
_EVENT_IDS: Final = uuid.UUID("6f1d3c52-8a4e-4f0b-9d7e-2b5c0e8a41f3")
_EMAILS_CACHED: Final = 4096


def _now() -> datetime:
    return datetime.now(UTC)


class AuditLogsApp:
    """The audit trail of each tenant."""

    def __init__(
        self,
        store: DataStore,
        *,
        users: UsersClient | None,
        retention: timedelta,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._users = users
        self._retention = retention
        self._clock = clock
        self._emails: OrderedDict[tuple[str, str], str | None] = OrderedDict()

    async def _email(self, tenant_id: str, user_id: str) -> str | None:
        key = (tenant_id, user_id)
        if key in self._emails:
            self._emails.move_to_end(key)
            return self._emails[key]
        assert self._users is not None
        email = await self._users.email_of(tenant_id, user_id)
        self._emails[key] = email
        if len(self._emails) > _EMAILS_CACHED:
            self._emails.popitem(last=False)
        return email

    async def _complete(self, tenant_id: str, log: AuditLog) -> AuditLog:
        """Fill in the emails of the users involved that the event does not carry."""
        if self._users is None:
            return log
        obj = log.object_
        if obj.type == "user":
            # The user changed (maybe their email): forget what was looked up about them.
            self._emails.pop((tenant_id, obj.id), None)
        if log.actor.type == "user" and log.actor.email is None:
            email = await self._email(tenant_id, log.actor.id)
            log = log.model_copy(update={"actor": log.actor.model_copy(update={"email": email})})
        if obj.type == "user" and (obj.user is None or obj.user.email is None):
            email = await self._email(tenant_id, obj.id)
            if email is not None:
                obj = obj.model_copy(update={"user": UserDetails(email=email)})
                log = log.model_copy(update={"object_": obj})
        return log

    async def record(self, tenant_id: str, log: AuditLog, *, key: str | None) -> bool:
        """Store an event; one delivered again with the same `key` is stored once.

        Returns whether it was new. The event expires `retention` after it happened.
        """
        log = await self._complete(tenant_id, log)
        event_id = str(uuid.uuid5(_EVENT_IDS, f"{tenant_id}\0{key}")) if key else str(uuid.uuid4())
        return await self._store.insert(
            tenant_id, log, event_id=event_id, expire_at=log.time + self._retention
        )

    async def list_logs(
        self, tenant_id: str, filter_: LogFilter, page: Page
    ) -> tuple[list[AuditLog], int]:
        """One page of the matching events and how many match in all."""
        logs = await self._store.find(tenant_id, filter_, skip=page.skip, limit=page.per_page)
        return logs, await self._store.count(tenant_id, filter_)

    def export(
        self, tenant_id: str, filter_: LogFilter, *, limit: int | None
    ) -> AsyncIterator[bytes]:
        """The matching events as CSV, streamed from the store in bounded memory."""
        return csv_chunks(self._store.stream(tenant_id, filter_, limit=limit))

    async def delete_tenant(self, tenant_id: str) -> int:
        """Delete a tenant's whole trail; how many events there were."""
        return await self._store.delete_tenant(tenant_id)
