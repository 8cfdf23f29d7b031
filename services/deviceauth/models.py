"""Domain models of deviceauth: devices, their authentication sets, tokens, limits."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ADDONS",
    "LIMIT_MAX_DEVICES",
    "AuthSet",
    "AuthStatus",
    "Device",
    "DeviceStatus",
    "ExternalIdentity",
    "Token",
    "device_status_from",
]

LIMIT_MAX_DEVICES: Final = "max_devices"
# Every device token lists these add-ons as enabled (Mender's open-source server does too).
ADDONS: Final = ("configure", "troubleshoot", "monitor")


class DeviceStatus(StrEnum):
    """Admission status of a device, derived from its authentication sets."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PREAUTHORIZED = "preauthorized"
    NOAUTH = "noauth"


class AuthStatus(StrEnum):
    """Status of one authentication set (identity + public key)."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PREAUTHORIZED = "preauthorized"


# A device takes the status of its "strongest" authentication set.
_WEIGHT: Final = {
    AuthStatus.ACCEPTED: 4,
    AuthStatus.PREAUTHORIZED: 3,
    AuthStatus.PENDING: 2,
    AuthStatus.REJECTED: 1,
}


def device_status_from(statuses: list[AuthStatus]) -> DeviceStatus:
    """The device status implied by the statuses of its authentication sets."""
    if not statuses:
        return DeviceStatus.NOAUTH
    return DeviceStatus(max(statuses, key=_WEIGHT.__getitem__).value)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ExternalIdentity(_Model):
    """The identity of a device at an external provider (IoT hub integrations)."""

    id: str
    name: str
    provider: str
    id_data: str | None = None


class AuthSet(_Model):
    """An identity presented with one public key; the unit that gets accepted or rejected."""

    id: str
    device_id: str
    # Canonical JSON text of the identity data (its sha256 is the identity key).
    id_data: str
    id_data_sha256: str
    pubkey: str
    status: AuthStatus
    ts: datetime

    @property
    def identity_data(self) -> dict[str, Any]:
        """The identity data as an object."""
        data: dict[str, Any] = json.loads(self.id_data)
        return data


class Device(_Model):
    """A device known by its identity data, whatever key it presents."""

    id: str
    id_data: str
    id_data_sha256: str
    status: DeviceStatus
    created_ts: datetime
    updated_ts: datetime
    decommissioning: bool = False
    # Whether the peers (deviceconnect, deviceconfig) were told about the accepted device.
    provisioned: bool = False
    # Increases with every status change so inventory can ignore stale updates.
    revision: int = 1
    check_in_time: datetime | None = None
    # When the check-in time was last pushed to inventory.
    check_in_synced_ts: datetime | None = None
    external: ExternalIdentity | None = None
    auth_sets: tuple[AuthSet, ...] = ()

    @property
    def identity_data(self) -> dict[str, Any]:
        """The identity data as an object."""
        data: dict[str, Any] = json.loads(self.id_data)
        return data


class Token(_Model):
    """A device token that was issued; its presence is what keeps it valid."""

    id: str
    device_id: str
    issued_at: datetime
    expires_at: datetime
