"""Audit events for the auditlogs service, delivered through the outbox.

Each event is one call to `POST /api/internal/v1/auditlogs/tenants/{tenant}/logs`, in the
shape of Mender's audit log entries: who (`actor`), did what (`action`, the names Mender's
audit log uses for remote access), to what (`object`), when, and the session it belongs to.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from common.core.outbox import Effect

__all__ = ["AUDITLOGS", "audit_event"]

AUDITLOGS: Final = "auditlogs"
_LOGS: Final = "/api/internal/v1/auditlogs/tenants/{tenant}/logs"


def audit_event(
    tenant_id: str,
    *,
    action: str,
    user_id: str,
    device_id: str,
    session_id: str,
    when: datetime,
    details: dict[str, Any] | None = None,
) -> Effect:
    """One audit log entry about a user's remote access to a device."""
    return Effect(
        peer=AUDITLOGS,
        method="POST",
        path=_LOGS.format(tenant=quote(tenant_id, safe="")),
        body={
            "actor": {"id": user_id, "type": "user"},
            "action": action,
            "object": {"id": device_id, "type": "device"},
            "meta": {"session_id": [session_id], **(details or {})},
            "time": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        },
    )
