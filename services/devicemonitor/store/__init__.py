"""devicemonitor's storage interface; `MongoStore` implements it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from common.core.outbox import Effect
from services.devicemonitor.models import Alert, AlertQuery, MonitorConfiguration

__all__ = ["DataStore"]


class DataStore(Protocol):
    """Where alerts and monitor configurations live; every method is confined to one tenant."""

    async def add_alerts(
        self, tenant_id: str, alerts: Sequence[Alert], *, effects: Sequence[Effect]
    ) -> None:
        """Record alerts, their devices' latest alert per name, and the effects, at once."""
        ...

    async def list_alerts(
        self, tenant_id: str, device_id: str, query: AlertQuery, *, skip: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of a device's alerts and how many match in all."""
        ...

    async def open_alerts(
        self, tenant_id: str, device_id: str, *, skip: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of the device's latest alert per name still at CRITICAL, and their number."""
        ...

    async def set_configuration(
        self,
        tenant_id: str,
        device_id: str,
        configuration: Sequence[MonitorConfiguration],
        *,
        now: datetime,
    ) -> None:
        """Replace the monitor configuration a device reported."""
        ...

    async def get_configuration(self, tenant_id: str, device_id: str) -> list[MonitorConfiguration]:
        """The monitor configuration a device reported (empty if none)."""
        ...

    async def delete_device(self, tenant_id: str, device_id: str) -> None:
        """Forget everything stored about a device."""
        ...
