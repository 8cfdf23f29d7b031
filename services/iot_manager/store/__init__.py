"""The storage interface of iot-manager; `mongo.MongoStore` implements it."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from common.core.outbox import Effect
from services.iot_manager.models import Credentials, DeliveryStatus, Device, Event, Integration

__all__ = ["DataStore", "DuplicateIntegration", "Removal"]


class DuplicateIntegration(Exception):
    """The tenant already has an integration."""


class Removal(enum.Enum):
    """What became of a request to remove an integration."""

    REMOVED = "removed"
    NOT_FOUND = "not found"
    IN_USE = "in use"


class DataStore(Protocol):
    """Integrations, devices and events, each confined to one tenant."""

    async def list_integrations(
        self, tenant_id: str, *, skip: int = 0, limit: int = 0
    ) -> list[Integration]:
        """The tenant's integrations (`limit` 0: all)."""
        ...

    async def get_integration(self, tenant_id: str, integration_id: str) -> Integration | None:
        """One integration, or None."""
        ...

    async def insert_integration(
        self, tenant_id: str, integration: Integration, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Store a new integration with `effects`; DuplicateIntegration when the tenant has one."""
        ...

    async def set_credentials(
        self,
        tenant_id: str,
        integration_id: str,
        credentials: Credentials,
        *,
        effects: Sequence[Effect] = (),
    ) -> bool:
        """Replace an integration's credentials, with `effects`; False (and nothing written)
        when there is no such integration."""
        ...

    async def remove_integration(
        self,
        tenant_id: str,
        integration_id: str,
        *,
        unless_in_use: bool,
        effects: Sequence[Effect] = (),
    ) -> Removal:
        """Remove an integration, with `effects`, but (with `unless_in_use`) not while devices
        use it."""
        ...

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """A device and its integrations, or None."""
        ...

    async def get_devices(self, tenant_id: str, device_ids: Sequence[str]) -> list[Device]:
        """The known devices among `device_ids`."""
        ...

    async def delete_device(self, tenant_id: str, device_id: str) -> bool:
        """Forget a device's integrations; False when it had none."""
        ...

    async def known_events(self, tenant_id: str, event_ids: Sequence[str]) -> set[str]:
        """The ids among `event_ids` of events already recorded."""
        ...

    async def record_events(
        self,
        tenant_id: str,
        events: Sequence[Event],
        *,
        expire_ts: datetime,
        link: Mapping[str, Sequence[str]],
        unlink: Sequence[str],
        effects: Sequence[Effect],
    ) -> bool:
        """In one transaction: store events, link devices (id → integration ids) to
        integrations, forget `unlink`ed devices, queue the deliveries. False when the events
        were already recorded (a repeated request)."""
        ...

    async def list_events(
        self, tenant_id: str, *, integration_id: str | None, skip: int, limit: int
    ) -> list[Event]:
        """One page of events, newest first (only those of one integration, if given)."""
        ...

    async def get_event(self, tenant_id: str, event_id: str) -> Event | None:
        """One event, or None."""
        ...

    async def add_delivery_status(
        self, tenant_id: str, event_id: str, status: DeliveryStatus
    ) -> None:
        """Record the outcome of a delivery attempt (the latest first)."""
        ...

    async def delete_tenant(self, tenant_id: str) -> None:
        """Remove every integration, device and event of a tenant."""
        ...
