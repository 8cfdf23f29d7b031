"""The admission rules both sides of deviceauth apply.

A device is created with its first auth set, an auth set is accepted within the device
limit, and the device's status follows its auth sets; each change tells the peers through
the outbox in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from common.core.outbox import Effect
from services.deviceauth.app.errors import UnsupportedLimit
from services.deviceauth.clients import (
    deviceconnect_disconnect,
    inventory_check_in,
    inventory_identity,
    provision_effects,
    status_effects,
)
from services.deviceauth.models import (
    LIMIT_MAX_DEVICES,
    AuthSet,
    AuthStatus,
    Device,
    DeviceStatus,
    device_status_from,
)
from services.deviceauth.store import DataStore

__all__ = ["RACE_ATTEMPTS", "Admission", "Clock", "check_limit_name", "new_id"]

Clock = Callable[[], datetime]

# How often a write that lost a race with a concurrent request is retried.
RACE_ATTEMPTS: Final = 3


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A new random id (devices, auth sets)."""
    return str(uuid.uuid4())


def check_limit_name(name: str) -> None:
    """Refuse a limit deviceauth does not have."""
    if name != LIMIT_MAX_DEVICES:
        raise UnsupportedLimit(name)


class Admission:
    """Devices and auth sets changed as Mender's rules require, with the peers told."""

    def __init__(
        self,
        store: DataStore,
        *,
        default_max_devices: int = 0,
        wake: Callable[[], None] = lambda: None,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._default_max_devices = default_max_devices
        self._wake = wake
        self._clock = clock or _utcnow

    def now(self) -> datetime:
        """The current time (the clock given, or the wall clock)."""
        return self._clock()

    def wake(self) -> None:
        """Tell the outbox relay that effects were committed."""
        self._wake()

    async def create_device(
        self,
        tenant: str,
        auth_set: AuthSet,
        status: DeviceStatus,
        *,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Create a device with its first auth set (and `effects` of the caller's own)."""
        device = Device(
            id=auth_set.device_id,
            id_data=auth_set.id_data,
            id_data_sha256=auth_set.id_data_sha256,
            status=status,
            created_ts=auth_set.ts,
            updated_ts=auth_set.ts,
            revision=1,
        )

        async def create(tx: DataStore) -> None:
            await tx.insert_device(tenant, device)
            await tx.insert_auth_set(tenant, auth_set)
            await tx.add_effects(
                [
                    inventory_identity(tenant, device.id, device.identity_data),
                    *status_effects(tenant, device.id, status=status, revision=device.revision),
                    *effects,
                ]
            )

        await self._store.atomically(create)
        self.wake()

    async def limit(self, tenant: str, name: str, *, store: DataStore | None = None) -> int:
        """The value of a limit (0 = unlimited), read through `store` when given."""
        check_limit_name(name)
        value = await (store or self._store).get_limit(tenant, name)
        return self._default_max_devices if value is None else value

    async def accept(
        self,
        tx: DataStore,
        tenant: str,
        device_id: str,
        auth_id: str,
        *,
        allowed: frozenset[AuthStatus],
        device: Device | None = None,
        read: AuthSet | None = None,
        check_in: datetime | None = None,
        issuing: bool = False,
    ) -> AuthSet | None:
        """Accept the auth set in `tx` if its status allows; the accepted auth set or None.

        `device` is the device as already read in `tx`, and `read` the auth set as read
        before it, if the caller has them. With `check_in`, the device's check-in at that
        time is recorded and published in the same write. `issuing` says the caller stores
        a token in `tx`: an auth set found accepted already is written to as well, so that
        the transaction conflicts with any concurrent change of its status. One read of the
        device's auth sets (none for a device not accepted yet, given both), one of the
        device (unless given), one write of each and one of the effects: acceptance is on
        the enrollment hot path.
        """
        if read is not None and device is not None and device.status is not DeviceStatus.ACCEPTED:
            # A device that is not accepted has no accepted key, so none to reject; the write
            # itself checks that the auth set's status still allows it.
            if not await tx.accept_auth_set(tenant, auth_id, allowed=allowed):
                return None
            accepted = read.model_copy(update={"status": AuthStatus.ACCEPTED})
        else:
            # Read inside the transaction: a concurrent change may have won the race.
            auth_sets = await tx.list_auth_sets(tenant, [device_id])
            auth_set = next((a for a in auth_sets if a.id == auth_id), None)
            if auth_set is None:
                return None
            if auth_set.status is AuthStatus.ACCEPTED:
                if issuing:
                    await tx.stamp_accepted_auth_set(tenant, auth_id, now=self.now())
                return auth_set
            if auth_set.status not in allowed:
                return None
            # A device has one accepted key: the others are rejected and their tokens go.
            rejected = [a.id for a in auth_sets if a.status is AuthStatus.ACCEPTED]
            for other in rejected:
                await tx.set_auth_set_status(tenant, other, AuthStatus.REJECTED)
            await tx.delete_tokens(tenant, token_ids=rejected)
            await tx.set_auth_set_status(tenant, auth_id, AuthStatus.ACCEPTED)
            accepted = auth_set.model_copy(update={"status": AuthStatus.ACCEPTED})
        if device is None:
            device = await tx.get_device(tenant, device_id)
        if device is None:
            return accepted
        # An accepted auth set outweighs every other: the device is accepted now.
        newly = device.status is not DeviceStatus.ACCEPTED
        effects: list[Effect] = []
        if not device.provisioned:
            # Before the status change, as Mender's workflow does: iot-manager hears that
            # the device is provisioned, then that it is accepted.
            effects += provision_effects(tenant, device, accepted)
        if newly:
            # The transaction read the device: a concurrent change of it makes this one
            # conflict and start over, so its revision is known without reading it back.
            revision = device.revision + 1
            effects += status_effects(
                tenant,
                device_id,
                status=DeviceStatus.ACCEPTED,
                revision=revision,
                check_in=check_in,
            )
        elif check_in is not None:
            effects.append(inventory_check_in(tenant, device_id, check_in))
        if effects or check_in is not None:
            await tx.admit_device(
                tenant,
                device_id,
                now=check_in or self.now(),
                newly=newly,
                check_in=check_in is not None,
            )
            await tx.add_effects(effects)
        return accepted

    async def refresh_status(self, tx: DataStore, tenant: str, device_id: str) -> Device | None:
        """Recompute the device status from its auth sets; tell the peers when it changes."""
        device = await tx.get_device(tenant, device_id)
        if device is None:
            return None
        auth_sets = await tx.list_auth_sets(tenant, [device_id])
        status = device_status_from([a.status for a in auth_sets])
        if status is device.status:
            return device
        updated = await tx.update_device_status(tenant, device_id, status=status, now=self.now())
        if updated is not None:
            effects = status_effects(tenant, device_id, status=status, revision=updated.revision)
            if device.status is DeviceStatus.ACCEPTED:
                # Its tokens are gone: an open remote-access connection must go too.
                effects.append(deviceconnect_disconnect(tenant, device_id))
            await tx.add_effects(effects)
        return updated

    async def can_accept(self, tenant: str, *, store: DataStore | None = None) -> bool:
        """Whether one more device may be accepted within the limit (read through `store`,
        a transaction's, when given)."""
        store = store or self._store
        limit = await self.limit(tenant, LIMIT_MAX_DEVICES, store=store)
        if limit == 0:
            return True
        accepted = await store.count_devices(tenant, status=DeviceStatus.ACCEPTED)
        return accepted < limit
