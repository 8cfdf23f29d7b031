"""The storage interface of deviceconnect; `mongo.MongoStore` implements it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol

from common.core.outbox import Effect
from services.deviceconnect.models import Device, Session

__all__ = ["DataStore"]


class DataStore(Protocol):
    """Connection states, sessions and their recordings, per tenant."""

    async def provision_devices(
        self, tenant_id: str, device_ids: Sequence[str], *, now: datetime
    ) -> None:
        """Record devices as disconnected, but for those known already."""
        ...

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """The device's connection state, or None."""
        ...

    async def delete_device(self, tenant_id: str, device_id: str) -> Device | None:
        """Forget a device; return what was stored."""
        ...

    async def set_connected(
        self, tenant_id: str, device_id: str, *, instance: str, now: datetime
    ) -> tuple[int, Device | None]:
        """Mark the device connected here; return the new version and the previous state."""
        ...

    async def set_disconnected(
        self, tenant_id: str, device_id: str, *, version: int, now: datetime
    ) -> bool:
        """Mark the device disconnected if `version` is still its current connection."""
        ...

    async def connected_devices(self, tenant_id: str) -> list[Device]:
        """The tenant's devices marked connected."""
        ...

    async def delete_tenant(self, tenant_id: str) -> None:
        """Delete everything stored for a tenant."""
        ...

    async def add_effects(self, effects: Sequence[Effect]) -> None:
        """Record cross-service effects."""
        ...

    async def start_session(
        self,
        tenant_id: str,
        session: Session,
        *,
        expire_ts: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Record a new session expiring at `expire_ts` (its effects in the same transaction)."""
        ...

    async def end_session(
        self,
        tenant_id: str,
        session: Session,
        *,
        expire_ts: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Record how a session ended (and its effects, in the same transaction)."""
        ...

    async def get_session(self, tenant_id: str, session_id: str) -> Session | None:
        """A session of the tenant, or None."""
        ...

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
        ...

    def recording(self, tenant_id: str, session_id: str) -> AsyncIterator[bytes]:
        """A session's recording chunks in order."""
        ...
