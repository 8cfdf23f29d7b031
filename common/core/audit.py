"""Audit events: who did what to which object, queued for the auditlogs service.

A service records an operator's change together with an audit event: it builds the event's
`Effect` with `audit_event(...)` and writes it into its outbox in the same transaction as the
change, so the trail can neither miss a change nor hold one that never happened, and nothing
is lost while auditlogs is down. The relay delivers each effect as
`POST /api/internal/v1/auditlogs/tenants/{tenant}/logs` with the effect's id as
`Idempotency-Key`, which auditlogs uses to store a redelivered event once.

The body has the shape of Mender's audit log entries: `actor` (who: a user with its email,
or a device with its identity data), `action`, `object` (what it was done to, with what the
web UI shows of it: a user's email, a deployment's or artifact's name …), `change` (a short
description), `meta` (lists of strings, here the request id) and `time`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import quote

from common.core.claims import Identity
from common.core.outbox import Effect
from common.core.requestid import current_request_id

__all__ = ["AUDITLOGS", "AUDITLOGS_PATH", "Actor", "AuditObject", "audit_event"]

# The peer name of the auditlogs service in outboxes and service declarations.
AUDITLOGS: Final = "auditlogs"
AUDITLOGS_PATH: Final = "/api/internal/v1/auditlogs/tenants/{tenant}/logs"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a user (with its email when known) or a device (with its identity)."""

    id: str
    type: Literal["user", "device"]
    email: str | None = None
    identity_data: str | None = None

    @classmethod
    def user(cls, user_id: str, email: str | None = None) -> Actor:
        """A user, by id (auditlogs fills in a missing email)."""
        return cls(id=user_id, type="user", email=email)

    @classmethod
    def of(cls, identity: Identity) -> Actor:
        """The caller a token names."""
        return cls(id=identity.subject, type="device" if identity.is_device else "user")

    def body(self) -> dict[str, Any]:
        """The wire form."""
        body: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.email is not None:
            body["email"] = self.email
        if self.identity_data is not None:
            body["identity_data"] = self.identity_data
        return body


@dataclass(frozen=True, slots=True)
class AuditObject:
    """What was acted on: its type and id, and what identifies it to a person.

    `details` go under the type's own key, as the web UI reads them: `{"email"}` for a
    user, `{"name"}` for a deployment or an artifact, `{"identity_data"}` for a device.
    """

    type: str
    id: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def user(cls, user_id: str, email: str | None = None) -> AuditObject:
        """A user account (auditlogs fills in a missing email)."""
        return cls("user", user_id, {"email": email} if email else {})

    @classmethod
    def device(cls, device_id: str, identity_data: str | None = None) -> AuditObject:
        """A device, with its identity data (a JSON text) when the emitter knows it."""
        return cls("device", device_id, {"identity_data": identity_data} if identity_data else {})

    @classmethod
    def named(cls, kind: str, object_id: str, name: str, **extra: str) -> AuditObject:
        """An object shown by its name: a deployment, an artifact, a release, an integration."""
        return cls(kind, object_id, {"name": name, **extra})

    def body(self) -> dict[str, Any]:
        """The wire form."""
        body: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.details:
            body[self.type] = dict(self.details)
        return body


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_event(
    tenant_id: str,
    *,
    actor: Actor,
    action: str,
    object_: AuditObject,
    when: datetime,
    change: str = "",
    meta: Mapping[str, list[str]] | None = None,
) -> Effect:
    """The outbox effect that records one audit event (with the current request's id)."""
    details = dict(meta or {})
    request_id = current_request_id()
    if request_id:
        details.setdefault("request_id", [request_id])
    body: dict[str, Any] = {
        "actor": actor.body(),
        "action": action,
        "object": object_.body(),
        "time": _rfc3339(when),
    }
    if change:
        body["change"] = change
    if details:
        body["meta"] = details
    return Effect(
        peer=AUDITLOGS,
        method="POST",
        path=AUDITLOGS_PATH.format(tenant=quote(tenant_id, safe="")),
        body=body,
    )
