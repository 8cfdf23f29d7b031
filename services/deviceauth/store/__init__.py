"""The storage interface of deviceauth; `mongo.MongoStore` implements it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from common.core.outbox import Effect
from services.deviceauth.models import (
    AuthSet,
    AuthStatus,
    Device,
    DeviceStatus,
    ExternalIdentity,
    Token,
)

__all__ = ["DataStore", "DuplicateError"]

T = TypeVar("T")


class DuplicateError(Exception):
    """A unique key (identity, or identity + key) is already taken."""


class DataStore(Protocol):
    """Devices, authentication sets, tokens, limits and outbox effects, per tenant."""

    async def atomically(self, work: Callable[[DataStore], Awaitable[T]]) -> T:
        """Run `work` with a store bound to one transaction (retried on transient conflicts)."""
        ...

    async def add_effects(self, effects: Sequence[Effect]) -> None:
        """Record cross-service effects (in the current transaction, if any)."""
        ...

    async def insert_device(self, tenant_id: str, device: Device) -> None:
        """Insert a device; DuplicateError when its identity exists."""
        ...

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        """Return a device (without auth sets) or None."""
        ...

    async def get_devices(self, tenant_id: str, device_ids: Sequence[str]) -> list[Device]:
        """Return those of these devices that exist (without auth sets), in no given order."""
        ...

    async def get_device_by_identity(self, tenant_id: str, id_data_sha256: str) -> Device | None:
        """Return the device with this identity key, or None."""
        ...

    async def list_devices(
        self,
        tenant_id: str,
        *,
        statuses: Sequence[DeviceStatus],
        ids: Sequence[str],
        skip: int,
        limit: int,
    ) -> list[Device]:
        """Devices matching the filters (empty filter = any), by status then id."""
        ...

    async def count_devices(self, tenant_id: str, *, status: DeviceStatus | None) -> int:
        """Count devices, optionally of one status."""
        ...

    async def update_device_status(
        self, tenant_id: str, device_id: str, *, status: DeviceStatus, now: datetime
    ) -> Device | None:
        """Set the status, bump the revision; return the updated device or None."""
        ...

    async def set_device_provisioned(
        self, tenant_id: str, device_id: str, *, provisioned: bool
    ) -> bool:
        """Set the provisioned flag; False when the device does not exist."""
        ...

    async def set_device_external(
        self, tenant_id: str, device_id: str, *, external: ExternalIdentity
    ) -> bool:
        """Replace the external identity; False when the device does not exist."""
        ...

    async def touch_check_in(
        self, tenant_id: str, device_id: str, *, now: datetime, last: datetime | None
    ) -> bool:
        """Set check_in_time to now if it is still `last` (None: never checked in)."""
        ...

    async def touch_check_ins(
        self, tenant_id: str, devices: Sequence[tuple[str, datetime | None]], *, now: datetime
    ) -> None:
        """`touch_check_in` for each (device id, last), in one write."""
        ...

    async def sync_check_in(
        self, tenant_id: str, device_id: str, *, now: datetime, synced: datetime | None
    ) -> bool:
        """Set check-in and sync times to now if the last sync is still `synced`."""
        ...

    async def admit_device(
        self, tenant_id: str, device_id: str, *, now: datetime, newly: bool, check_in: bool
    ) -> None:
        """Mark the device accepted and provisioned in one write: `newly` accepted bumps its
        revision and `updated_ts`; `check_in` sets its check-in and sync times to `now`."""
        ...

    async def delete_device(self, tenant_id: str, device_id: str) -> bool:
        """Delete the device document; False when it did not exist."""
        ...

    async def insert_auth_set(self, tenant_id: str, auth_set: AuthSet) -> None:
        """Insert an auth set; DuplicateError when identity + key exist."""
        ...

    async def get_auth_set(
        self, tenant_id: str, auth_id: str, *, device_id: str | None = None
    ) -> AuthSet | None:
        """Return an auth set (of the device, when given) or None."""
        ...

    async def find_auth_set(
        self, tenant_id: str, *, id_data_sha256: str, pubkey: str
    ) -> AuthSet | None:
        """Return the auth set of this identity and key, or None."""
        ...

    async def list_auth_sets(self, tenant_id: str, device_ids: Sequence[str]) -> list[AuthSet]:
        """Auth sets of the devices, oldest first."""
        ...

    async def set_auth_set_status(self, tenant_id: str, auth_id: str, status: AuthStatus) -> None:
        """Change the status of an auth set."""
        ...

    async def accept_auth_set(
        self, tenant_id: str, auth_id: str, *, allowed: frozenset[AuthStatus]
    ) -> bool:
        """Accept an auth set whose status is one of `allowed`; False if it is not."""
        ...

    async def stamp_accepted_auth_set(self, tenant_id: str, auth_id: str, *, now: datetime) -> bool:
        """Record that a token is issued for an accepted auth set; False if not accepted."""
        ...

    async def delete_auth_set(self, tenant_id: str, auth_id: str) -> bool:
        """Delete one auth set; False when it did not exist."""
        ...

    async def delete_auth_sets_of_device(self, tenant_id: str, device_id: str) -> int:
        """Delete every auth set of a device; return how many."""
        ...

    async def save_token(self, tenant_id: str, token: Token) -> None:
        """Store an issued token (replacing one with the same id)."""
        ...

    async def get_token(self, tenant_id: str, token_id: str) -> Token | None:
        """Return a stored token or None."""
        ...

    async def delete_token(self, tenant_id: str, token_id: str) -> bool:
        """Delete one token, revoking it; False when it did not exist."""
        ...

    async def delete_tokens(
        self,
        tenant_id: str,
        *,
        device_id: str | None = None,
        token_ids: Sequence[str] | None = None,
    ) -> int:
        """Delete the tenant's tokens, of one device or with the given ids, revoking them."""
        ...

    async def issue_time(self, tenant_id: str, token_id: str, *, now: datetime) -> int:
        """The `iat` of a token issued now: after any revocation of its id or tenant."""
        ...

    async def get_limit(self, tenant_id: str, name: str) -> int | None:
        """Return a limit's value, or None when it is not set."""
        ...

    async def put_limit(self, tenant_id: str, name: str, value: int) -> None:
        """Set a limit."""
        ...

    async def delete_limit(self, tenant_id: str, name: str) -> None:
        """Remove a limit."""
        ...
