"""Alerts: devices raise them, operators list them, inventory counts the open ones."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from common.core.outbox import Effect
from common.core.pages import Page
from services.devicemonitor.app.errors import InvalidRequest
from services.devicemonitor.app.validation import batch, check_device, check_not_future, parse
from services.devicemonitor.clients import alert_audit, reindex
from services.devicemonitor.models import (
    Alert,
    AlertQuery,
    MonitorCheck,
    MonitorConfiguration,
    NewAlert,
)
from services.devicemonitor.store import DataStore

__all__ = ["AlertsApp", "alert_effects"]

_MAX_CHECKS = 1000


def alert_effects(tenant_id: str, alerts: Sequence[Alert]) -> list[Effect]:
    """What alerts cause elsewhere: inventory's refresh of each device, an audit event each."""
    effects = [reindex(tenant_id, d) for d in sorted({a.device_id for a in alerts})]
    return effects + [alert_audit(tenant_id, a) for a in alerts]


class AlertsApp:
    """The alert use-cases over the store; effects wake the outbox relay through `notify`."""

    def __init__(
        self,
        store: DataStore,
        *,
        clock: Callable[[], datetime],
        max_batch: int,
        max_skew: timedelta,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_batch = max_batch
        self._max_skew = max_skew
        self._notify = notify

    def new_alert(self, device_id: str, raw: Any, what: str) -> Alert:
        """One reported alert checked into an `Alert` of the device."""
        new = parse(NewAlert, raw, what)
        check_device(new.device_id, device_id)
        check_not_future(new.timestamp, f"{what}: timestamp", now=self._clock, skew=self._max_skew)
        return Alert(
            id=str(uuid.uuid4()),
            device_id=device_id,
            name=new.name or new.subject.name,
            level=new.level,
            subject=new.subject,
            timestamp=new.timestamp,
        )

    async def raise_alerts(self, tenant_id: str, device_id: str, body: Any) -> list[Alert]:
        """Record the alerts a device reports (one, or an array): all of them, or none."""
        items = batch(body, "alerts", limit=self._max_batch)
        alerts = [self.new_alert(device_id, raw, f"alert {i}") for i, raw in enumerate(items)]
        await self.record(tenant_id, alerts)
        return alerts

    async def record(self, tenant_id: str, alerts: Sequence[Alert]) -> None:
        """Store alerts with their effects: inventory's refresh and an audit event each."""
        effects = alert_effects(tenant_id, alerts)
        await self._store.add_alerts(tenant_id, alerts, effects=effects)
        self._notify()

    async def device_alerts(
        self, tenant_id: str, device_id: str, query: AlertQuery, page: Page
    ) -> tuple[list[Alert], int]:
        """A page of a device's alerts (newest first unless asked) and their total."""
        if (
            query.issued_after is not None
            and query.issued_before is not None
            and query.issued_after >= query.issued_before
        ):
            raise InvalidRequest("issued_after must be before issued_before")
        return await self._store.list_alerts(
            tenant_id, device_id, query, skip=page.skip, limit=page.per_page
        )

    async def latest_alerts(
        self, tenant_id: str, device_id: str, page: Page
    ) -> tuple[list[Alert], int]:
        """The device's open issues: per alert name, the latest alert if it is CRITICAL."""
        return await self._store.open_alerts(
            tenant_id, device_id, skip=page.skip, limit=page.per_page
        )

    async def set_configuration(self, tenant_id: str, device_id: str, body: Any) -> None:
        """Replace the checks a device reports it runs."""
        if not isinstance(body, list):
            raise InvalidRequest("the body must be an array of checks")
        if len(body) > _MAX_CHECKS:
            raise InvalidRequest(f"at most {_MAX_CHECKS} checks, this one has {len(body)}")
        checks: list[MonitorConfiguration] = []
        for i, raw in enumerate(body):
            check = parse(MonitorCheck, raw, f"check {i}")
            if not isinstance(raw.get(check.type), dict):
                raise InvalidRequest(f"check {i}: {check.type}: must be an object")
            checks.append(raw)
        await self._store.set_configuration(tenant_id, device_id, checks, now=self._clock())

    async def configuration(self, tenant_id: str, device_id: str) -> list[MonitorConfiguration]:
        """The checks a device reported (empty before its first report)."""
        return await self._store.get_configuration(tenant_id, device_id)

    async def forget_device(self, tenant_id: str, device_id: str) -> None:
        """Delete a decommissioned device's alerts, configuration and telemetry."""
        await self._store.delete_device(tenant_id, device_id)
