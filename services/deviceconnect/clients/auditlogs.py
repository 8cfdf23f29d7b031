"""Audit events of remote access, built with the shared builder and delivered by the outbox.

A user's session with a device (terminal, port forward) and each file transfer is one event
about the device, with the action names Mender's audit log uses for remote access, and the
session it belongs to in `meta`.
"""

from __future__ import annotations

from datetime import datetime

from common.core.audit import AUDITLOGS, Actor, AuditObject
from common.core.audit import audit_event as _audit_event
from common.core.outbox import Effect

__all__ = ["AUDITLOGS", "audit_event"]


def audit_event(
    tenant_id: str,
    *,
    action: str,
    user_id: str,
    device_id: str,
    session_id: str,
    when: datetime,
    details: dict[str, list[str]] | None = None,
) -> Effect:
    """One audit log entry about a user's remote access to a device."""
    return _audit_event(
        tenant_id,
        actor=Actor.user(user_id),
        action=action,
        object_=AuditObject.device(device_id),
        when=when,
        meta={"session_id": [session_id], **(details or {})},
    )
