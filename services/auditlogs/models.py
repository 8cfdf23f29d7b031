"""Domain models of auditlogs: an audit event, in the shape of Mender's audit log entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "OBJECT_TYPES",
    "AuditLog",
    "DeviceDetails",
    "EventActor",
    "EventObject",
    "LogFilter",
    "NamedDetails",
    "ObjectType",
    "UserDetails",
]

# What an event may be about; the management API's `object_type` filter takes these.
ObjectType = Literal[
    "artifact",
    "deployment",
    "device",
    "integration",
    "release",
    "user",
    "user_access_token",
]
OBJECT_TYPES: Final[tuple[str, ...]] = get_args(ObjectType)

_Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
_Text = Annotated[str, StringConstraints(max_length=1024)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class EventActor(_Model):
    """Who acted: a user (with its email) or a device (with its identity data, JSON text)."""

    id: _Id
    type: Literal["user", "device"]
    email: _Text | None = None
    identity_data: Annotated[str, StringConstraints(max_length=4096)] | None = None


class UserDetails(_Model):
    """How a user shows: its email."""

    email: _Text | None = None


class NamedDetails(_Model):
    """How a deployment, artifact, release, integration or access token shows: its name."""

    name: _Text
    artifact_name: _Text | None = None


class DeviceDetails(_Model):
    """How a device shows: its identity data (JSON text)."""

    identity_data: Annotated[str, StringConstraints(max_length=4096)]


class EventObject(_Model):
    """What was acted on; the details sit under the key of its type, as the web UI reads them."""

    id: _Id
    type: ObjectType
    user: UserDetails | None = None
    device: DeviceDetails | None = None
    deployment: NamedDetails | None = None
    artifact: NamedDetails | None = None
    release: NamedDetails | None = None
    integration: NamedDetails | None = None
    user_access_token: NamedDetails | None = None

    @property
    def label(self) -> str:
        """What identifies it to a person: an email, a name or an identity; else empty."""
        if self.user is not None:
            return self.user.email or ""
        if self.device is not None:
            return self.device.identity_data
        named = self.deployment or self.artifact or self.release
        named = named or self.integration or self.user_access_token
        return named.name if named is not None else ""


class AuditLog(_Model):
    """One audit event: who did what to which object, when, and the change it made."""

    actor: EventActor
    action: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    object_: EventObject = Field(alias="object")
    change: Annotated[str, StringConstraints(max_length=64 * 1024)] | None = None
    meta: dict[_Id, list[_Text]] = Field(default_factory=dict, max_length=32)
    time: AwareDatetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LogFilter:
    """Which events to list or export, and in which order of time."""

    actor_id: str | None = None
    actor_email: str | None = None
    object_id: str | None = None
    object_type: str | None = None
    object_deployment_name: str | None = None
    # From this instant on (inclusive).
    since: datetime | None = None
    # Before this instant (exclusive).
    until: datetime | None = None
    ascending: bool = False
