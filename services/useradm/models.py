"""Domain models of useradm: users, stored tokens, UI settings and plans."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

__all__ = [
    "SCOPE_ALL",
    "Plan",
    "PlanBinding",
    "PlanFeatures",
    "StoredSettings",
    "StoredToken",
    "User",
    "UserChange",
    "UserFilter",
]

# The only scope Mender's open-source authorizer knows: every API, every method.
SCOPE_ALL: Final = "mender.*"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class User(_Model):
    """A user account; `password_hash` is a bcrypt hash and never leaves the service."""

    id: str
    email: str
    password_hash: str
    created_ts: datetime
    updated_ts: datetime
    login_ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserFilter:
    """Conditions of a user list; every given condition must hold."""

    ids: tuple[str, ...] | None = None
    emails: tuple[str, ...] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserChange:
    """An update of a user: the fields to set (None keeps the stored value)."""

    updated_ts: datetime
    email: str | None = None
    password_hash: str | None = None


class StoredToken(_Model):
    """The record of an issued user token; verification requires it to exist.

    Login tokens have no `name`; personal access tokens do (unique per user).
    """

    id: str
    subject: str
    issued_at: datetime
    expires_at: datetime | None = None
    name: str | None = None
    last_used: datetime | None = None

    @property
    def personal(self) -> bool:
        """Whether this is a personal access token."""
        return self.name is not None


class StoredSettings(_Model):
    """A settings document of the web UI (tenant-wide or one user's) with its ETag."""

    values: dict[str, Any]
    etag: str


class PlanFeatures(_Model):
    """What a plan enables."""

    rbac: bool = False
    audit_logs: bool = False
    dynamic_groups: bool = False
    terminal: bool = False
    file_transfer: bool = False
    configuration: bool = False
    monitoring: bool = False
    reporting: bool = False


class Plan(_Model):
    """A subscription plan."""

    name: str
    display_name: str
    features: PlanFeatures | None = None


class PlanBinding(_Model):
    """The plan of the caller's tenant."""

    plan: Plan
