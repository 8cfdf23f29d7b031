"""The operator's use-cases of deviceauth: devices and auth sets, tokens, limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from common.core.audit import Actor
from common.core.errors import BadRequest, Conflict
from common.core.outbox import Effect
from common.core.pages import Page
from services.deviceauth.app.admission import RACE_ATTEMPTS, Admission, check_limit_name, new_id
from services.deviceauth.app.errors import (
    AuthSetNotFound,
    BadStatusTransition,
    DeviceExists,
    DeviceLimitReached,
    DeviceNotFound,
    TokenNotFound,
)
from services.deviceauth.app.iddata import IdentityDataError, canonical_identity, identity_key
from services.deviceauth.app.keys import PublicKeyError, parse_public_key
from services.deviceauth.clients import decommission_effects, device_audit, dismissal_effects
from services.deviceauth.models import AuthSet, AuthStatus, Device, DeviceStatus, ExternalIdentity
from services.deviceauth.store import DataStore, DuplicateError

__all__ = ["DevAuthApp"]

_ACCEPTABLE_FROM: Final = frozenset({AuthStatus.PENDING, AuthStatus.REJECTED})
_REJECTABLE_FROM: Final = frozenset({AuthStatus.PENDING, AuthStatus.ACCEPTED})
_SETTABLE: Final = (AuthStatus.ACCEPTED, AuthStatus.REJECTED, AuthStatus.PENDING)
_STATUS_CHOICES: Final = "pending, accepted, rejected, preauthorized, noauth"


def _status_filter(value: str) -> DeviceStatus:
    try:
        return DeviceStatus(value)
    except ValueError:
        raise BadRequest(
            "filter status must be one of: accepted, pending, rejected, preauthorized or noauth"
        ) from None


class DevAuthApp:
    """Device admission as the operator runs it: devices, auth sets, tokens, limits."""

    def __init__(self, store: DataStore, admission: Admission) -> None:
        self._store = store
        self._admission = admission

    # -- management ------------------------------------------------------------------------

    async def list_devices(
        self,
        tenant: str,
        *,
        statuses: Sequence[str],
        ids: Sequence[str],
        page: Page,
    ) -> tuple[list[Device], bool]:
        """One page of devices with their auth sets, and whether another page follows."""
        wanted = [_status_filter(s) for s in statuses]
        devices = await self._store.list_devices(
            tenant, statuses=wanted, ids=ids, skip=page.skip, limit=page.per_page + 1
        )
        has_next = len(devices) > page.per_page
        return await self._with_auth_sets(tenant, devices[: page.per_page]), has_next

    async def count_devices(self, tenant: str, *, status: str | None) -> int:
        """Count the tenant's devices, optionally of one status."""
        wanted: DeviceStatus | None = None
        if status:
            try:
                wanted = DeviceStatus(status)
            except ValueError:
                raise BadRequest(f"status must be one of: {_STATUS_CHOICES}") from None
        return await self._store.count_devices(tenant, status=wanted)

    async def get_device(self, tenant: str, device_id: str) -> Device:
        """A device with its auth sets."""
        device = await self._store.get_device(tenant, device_id)
        if device is None:
            raise DeviceNotFound()
        return (await self._with_auth_sets(tenant, [device]))[0]

    async def device_status(self, tenant: str, device_id: str) -> DeviceStatus:
        """The admission status of a device."""
        device = await self._store.get_device(tenant, device_id)
        if device is None:
            raise DeviceNotFound()
        return device.status

    async def preauthorize(
        self,
        tenant: str,
        *,
        identity_data: Mapping[str, Any],
        pubkey: str,
        force: bool,
        actor: Actor | None = None,
    ) -> str:
        """Admit an identity + key in advance; return the device id (DeviceExists on 409)."""
        if not identity_data:
            raise BadRequest("failed to decode preauth request: identity_data: cannot be blank")
        try:
            canonical = canonical_identity(identity_data)
            _, normalized = parse_public_key(pubkey)
        except (IdentityDataError, PublicKeyError) as exc:
            raise BadRequest(f"failed to decode preauth request: {exc}") from None
        sha = identity_key(canonical)
        for _ in range(RACE_ATTEMPTS):
            existing = await self._store.get_device_by_identity(tenant, sha)
            if existing is not None:
                if not force:
                    raise DeviceExists((await self._with_auth_sets(tenant, [existing]))[0])
                await self._add_preauthorized_key(tenant, existing, normalized, actor=actor)
                return existing.id
            auth_set = AuthSet(
                id=new_id(),
                device_id=new_id(),
                id_data=canonical,
                id_data_sha256=sha,
                pubkey=normalized,
                status=AuthStatus.PREAUTHORIZED,
                ts=self._admission.now(),
            )
            try:
                await self._admission.create_device(
                    tenant,
                    auth_set,
                    DeviceStatus.PREAUTHORIZED,
                    effects=self._audit(tenant, actor, "preauthorize", auth_set),
                )
            except DuplicateError:
                continue  # the identity was registered concurrently
            return auth_set.device_id
        raise Conflict("device already exists")

    async def _add_preauthorized_key(
        self, tenant: str, device: Device, pubkey: str, *, actor: Actor | None
    ) -> None:
        now = self._admission.now()

        async def add(tx: DataStore) -> None:
            found = await tx.find_auth_set(
                tenant, id_data_sha256=device.id_data_sha256, pubkey=pubkey
            )
            if found is None:
                found = AuthSet(
                    id=new_id(),
                    device_id=device.id,
                    id_data=device.id_data,
                    id_data_sha256=device.id_data_sha256,
                    pubkey=pubkey,
                    status=AuthStatus.PREAUTHORIZED,
                    ts=now,
                )
                await tx.insert_auth_set(tenant, found)
            elif found.status in (AuthStatus.PENDING, AuthStatus.REJECTED):
                await tx.set_auth_set_status(tenant, found.id, AuthStatus.PREAUTHORIZED)
            await self._admission.refresh_status(tx, tenant, device.id)
            await tx.add_effects(self._audit(tenant, actor, "preauthorize", found))

        await self._store.atomically(add)
        self._admission.wake()

    async def set_auth_set_status(
        self, tenant: str, device_id: str, auth_id: str, *, status: str, actor: Actor | None = None
    ) -> None:
        """Accept, reject or reset (pending) one auth set of a device."""
        try:
            target = AuthStatus(status)
        except ValueError:
            target = AuthStatus.PREAUTHORIZED
        if target not in _SETTABLE:
            raise BadRequest("incorrect device status")
        auth_set = await self._store.get_auth_set(tenant, auth_id, device_id=device_id)
        if auth_set is None:
            raise AuthSetNotFound()
        if auth_set.status is target and target is not AuthStatus.REJECTED:
            return
        if target is AuthStatus.ACCEPTED:
            await self._accept_by_user(tenant, auth_set, actor=actor)
            return
        if target is AuthStatus.REJECTED and auth_set.status not in _REJECTABLE_FROM:
            raise BadStatusTransition()
        if target is AuthStatus.PENDING and auth_set.status is AuthStatus.PREAUTHORIZED:
            raise BadStatusTransition()

        async def demote(tx: DataStore) -> None:
            current = await tx.get_auth_set(tenant, auth_id, device_id=device_id)
            if current is None or current.status is target:
                return
            await tx.set_auth_set_status(tenant, auth_id, target)
            if current.status is AuthStatus.ACCEPTED:
                await tx.delete_tokens(tenant, device_id=device_id)
            await self._admission.refresh_status(tx, tenant, device_id)
            action = "reject" if target is AuthStatus.REJECTED else "update"
            await tx.add_effects(self._audit(tenant, actor, action, current, target))

        await self._store.atomically(demote)
        self._admission.wake()

    async def _accept_by_user(self, tenant: str, auth_set: AuthSet, *, actor: Actor | None) -> None:
        if auth_set.status not in _ACCEPTABLE_FROM:
            raise BadStatusTransition()
        device = await self._store.get_device(tenant, auth_set.device_id)
        if device is None:
            raise DeviceNotFound()
        if device.status is not DeviceStatus.ACCEPTED and not await self._admission.can_accept(
            tenant
        ):
            raise DeviceLimitReached()

        async def accept(tx: DataStore) -> None:
            accepted = await self._admission.accept(
                tx, tenant, auth_set.device_id, auth_set.id, allowed=_ACCEPTABLE_FROM
            )
            if accepted is not None:
                await tx.add_effects(self._audit(tenant, actor, "accept", accepted))

        await self._store.atomically(accept)
        self._admission.wake()

    async def get_auth_set_status(self, tenant: str, device_id: str, auth_id: str) -> AuthStatus:
        """The status of one auth set of a device."""
        auth_set = await self._store.get_auth_set(tenant, auth_id, device_id=device_id)
        if auth_set is None:
            raise AuthSetNotFound()
        return auth_set.status

    async def delete_auth_set(
        self, tenant: str, device_id: str, auth_id: str, *, actor: Actor | None = None
    ) -> None:
        """Dismiss an auth set; the last preauthorized one takes its device with it."""

        async def delete(tx: DataStore) -> None:
            auth_set = await tx.get_auth_set(tenant, auth_id, device_id=device_id)
            if auth_set is None:
                raise AuthSetNotFound()
            await tx.add_effects(self._audit(tenant, actor, "dismiss", auth_set))
            await tx.delete_auth_set(tenant, auth_id)
            if auth_set.status is AuthStatus.ACCEPTED:
                await tx.delete_tokens(tenant, device_id=device_id)
            if auth_set.status is AuthStatus.PREAUTHORIZED and not await tx.list_auth_sets(
                tenant, [device_id]
            ):
                await tx.delete_tokens(tenant, device_id=device_id)
                await tx.delete_device(tenant, device_id)
                await tx.add_effects(dismissal_effects(tenant, device_id))
                return
            await self._admission.refresh_status(tx, tenant, device_id)

        await self._store.atomically(delete)
        self._admission.wake()

    async def decommission(
        self, tenant: str, device_id: str, *, actor: Actor | None = None
    ) -> None:
        """Remove a device at once and have every peer forget it."""

        async def remove(tx: DataStore) -> None:
            device = await tx.get_device(tenant, device_id)
            if device is None:
                raise DeviceNotFound()
            await tx.delete_tokens(tenant, device_id=device_id)
            await tx.delete_auth_sets_of_device(tenant, device_id)
            await tx.delete_device(tenant, device_id)
            await tx.add_effects(decommission_effects(tenant, device_id))
            await tx.add_effects(self._audit(tenant, actor, "decommission", device))

        await self._store.atomically(remove)
        self._admission.wake()

    async def revoke_token(self, tenant: str, token_id: str) -> None:
        """Delete one token (by its jti), revoking it."""
        if not await self._store.delete_token(tenant, token_id):
            raise TokenNotFound()

    async def get_limit(self, tenant: str, name: str) -> int:
        """The value of a limit (0 = unlimited)."""
        return await self._admission.limit(tenant, name)

    # -- internal --------------------------------------------------------------------------

    async def set_limit(self, tenant: str, name: str, *, value: int) -> None:
        """Set a tenant's limit."""
        check_limit_name(name)
        if value < 0:
            raise BadRequest("limit must not be negative")
        await self._store.put_limit(tenant, name, value)

    async def delete_limit(self, tenant: str, name: str) -> None:
        """Remove a tenant's limit (the default applies again)."""
        check_limit_name(name)
        await self._store.delete_limit(tenant, name)

    async def delete_tokens(self, tenant: str, *, device_id: str | None) -> None:
        """Revoke the tokens of one device, or of the whole tenant."""
        await self._store.delete_tokens(tenant, device_id=device_id)

    async def delete_device(self, tenant: str, device_id: str) -> None:
        """Delete a device, its auth sets and tokens (no peer is told)."""

        async def delete(tx: DataStore) -> None:
            await tx.delete_tokens(tenant, device_id=device_id)
            removed_sets = await tx.delete_auth_sets_of_device(tenant, device_id)
            if not await tx.delete_device(tenant, device_id) and not removed_sets:
                raise DeviceNotFound()

        await self._store.atomically(delete)

    async def update_device(self, tenant: str, device_id: str, *, provisioned: bool | None) -> None:
        """Update a device's bookkeeping: whether the peers were told about it."""
        if provisioned is None:
            found = await self._store.get_device(tenant, device_id) is not None
        else:
            found = await self._store.set_device_provisioned(
                tenant, device_id, provisioned=provisioned
            )
        if not found:
            raise DeviceNotFound()

    async def set_external(
        self, tenant: str, device_id: str, *, external: ExternalIdentity
    ) -> None:
        """Replace the device's identity at an external provider."""
        if not await self._store.set_device_external(tenant, device_id, external=external):
            raise DeviceNotFound()

    def _audit(
        self,
        tenant: str,
        actor: Actor | None,
        action: str,
        subject: AuthSet | Device,
        status: AuthStatus | None = None,
    ) -> list[Effect]:
        when = self._admission.now()
        return device_audit(tenant, actor, action, subject, when=when, status=status)

    async def _with_auth_sets(self, tenant: str, devices: Sequence[Device]) -> list[Device]:
        auth_sets = await self._store.list_auth_sets(tenant, [d.id for d in devices])
        by_device: dict[str, list[AuthSet]] = {}
        for auth_set in auth_sets:
            by_device.setdefault(auth_set.device_id, []).append(auth_set)
        return [d.model_copy(update={"auth_sets": tuple(by_device.get(d.id, ()))}) for d in devices]
