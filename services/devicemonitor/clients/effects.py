"""Effects of alerts on other services, queued in the outbox with the alerts themselves.

- inventory re-reads the device's open alerts (`…/reindex?service=devicemonitor`) and sets
  its `monitor` attributes `alerts` (any open) and `alert_count`, as Mender's inventory does.
  The call carries no state, so a repeat or a late delivery leaves the attributes current.
- auditlogs records each alert as an event of the device.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from common.core.audit import AUDITLOGS, Actor, AuditObject, audit_event
from common.core.outbox import Effect
from services.devicemonitor.models import Alert

__all__ = ["AUDITLOGS", "INVENTORY", "alert_audit", "reindex"]

INVENTORY: Final = "inventory"
_REINDEX: Final = "/api/internal/v1/inventory/tenants/{tenant}/devices/{device}/reindex"


def _segment(value: str) -> str:
    return quote(value, safe="")


def reindex(tenant_id: str, device_id: str) -> Effect:
    """inventory refreshes the device's `monitor` attributes from its open alerts."""
    path = _REINDEX.format(tenant=_segment(tenant_id), device=_segment(device_id))
    return Effect(peer=INVENTORY, method="POST", path=f"{path}?service=devicemonitor", ok=(200,))


def alert_audit(tenant_id: str, alert: Alert) -> Effect:
    """The audit event of an alert: the device raised it about one of its entities."""
    return audit_event(
        tenant_id,
        actor=Actor(id=alert.device_id, type="device"),
        action="alert",
        object_=AuditObject.device(alert.device_id),
        when=alert.timestamp,
        change=f"{alert.level.value}: {alert.name}",
        meta={"alert_id": [alert.id], "level": [alert.level.value]},
    )
