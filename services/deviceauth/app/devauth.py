"""The use-cases of deviceauth: admission of devices, their tokens, and device limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from common.core.audit import Actor
from common.core.claims import decode_claims
from common.core.errors import BadRequest, Conflict, Unauthorized
from common.core.outbox import Effect
from common.core.pages import Page
from common.core.tokens import SigningKey, TokenExpired, TokenInvalid, TokenVerifier
from services.deviceauth.app.authreq import AuthRequest, parse_auth_request
from services.deviceauth.app.errors import (
    AuthSetNotFound,
    BadStatusTransition,
    DeviceExists,
    DeviceLimitReached,
    DeviceNotFound,
    DeviceUnauthorized,
    TokenExpiredError,
    TokenInvalidError,
    TokenNotFound,
    UnsupportedLimit,
)
from services.deviceauth.app.iddata import IdentityDataError, canonical_identity, identity_key
from services.deviceauth.app.keys import (
    PublicKeyError,
    SignatureError,
    parse_public_key,
    verify_signature,
)
from services.deviceauth.clients import (
    decommission_effects,
    device_audit,
    deviceconnect_disconnect,
    dismissal_effects,
    inventory_check_in,
    inventory_identity,
    provision_effects,
    status_effects,
)
from services.deviceauth.models import (
    ADDONS,
    LIMIT_MAX_DEVICES,
    AuthSet,
    AuthStatus,
    Device,
    DeviceStatus,
    ExternalIdentity,
    Token,
    device_status_from,
)
from services.deviceauth.store import DataStore, DuplicateError

__all__ = ["Clock", "DevAuthApp"]

Clock = Callable[[], datetime]

# The device's check-in time is written at most this often...
CHECK_IN_EVERY: Final = timedelta(minutes=1)
# ...and pushed to inventory at most this often (Mender's cached path does the same).
CHECK_IN_SYNC_EVERY: Final = timedelta(days=1)
# How often a write that lost a race with a concurrent request is retried.
_RACE_ATTEMPTS: Final = 3

_ACCEPTABLE_FROM: Final = frozenset({AuthStatus.PENDING, AuthStatus.REJECTED})
_REJECTABLE_FROM: Final = frozenset({AuthStatus.PENDING, AuthStatus.ACCEPTED})
_SETTABLE: Final = (AuthStatus.ACCEPTED, AuthStatus.REJECTED, AuthStatus.PENDING)
_STATUS_CHOICES: Final = "pending, accepted, rejected, preauthorized, noauth"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


def _status_filter(value: str) -> DeviceStatus:
    try:
        return DeviceStatus(value)
    except ValueError:
        raise BadRequest(
            "filter status must be one of: accepted, pending, rejected, preauthorized or noauth"
        ) from None


def _check_limit_name(name: str) -> None:
    if name != LIMIT_MAX_DEVICES:
        raise UnsupportedLimit(name)


class DevAuthApp:
    """Device admission: auth requests, accept/reject/preauthorize, tokens, limits."""

    def __init__(
        self,
        store: DataStore,
        *,
        signer: SigningKey,
        verifier: TokenVerifier,
        issuer: str,
        token_lifetime: timedelta,
        default_max_devices: int = 0,
        wake: Callable[[], None] = lambda: None,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._verifier = verifier
        self._issuer = issuer
        self._lifetime = token_lifetime
        self._default_max_devices = default_max_devices
        self._wake = wake
        self._clock = clock or _utcnow

    # -- the device API --------------------------------------------------------------------

    async def authenticate(self, body: bytes, *, signature: str | None) -> str:
        """Answer an auth request: a new token for an accepted device, else 401."""
        request = parse_auth_request(body)
        if not signature:
            raise BadRequest("missing request signature header")
        try:
            verify_signature(request.key, signature, body)
        except SignatureError:
            raise Unauthorized("signature verification failed") from None
        # Tenant tokens are not checked: every device belongs to the default tenant.
        tenant = ""
        auth_set = await self._auth_set_for(tenant, request)
        if auth_set.status is AuthStatus.PREAUTHORIZED:
            auth_set = await self._accept_preauthorized(tenant, auth_set)
        if auth_set.status is not AuthStatus.ACCEPTED:
            raise DeviceUnauthorized()
        return await self._issue_token(tenant, auth_set)

    async def _auth_set_for(self, tenant: str, request: AuthRequest) -> AuthSet:
        for _ in range(_RACE_ATTEMPTS):
            found = await self._store.find_auth_set(
                tenant, id_data_sha256=request.id_data_sha256, pubkey=request.pubkey
            )
            if found is not None:
                return found
            try:
                return await self._record_auth_request(tenant, request)
            except DuplicateError:
                continue  # a concurrent request of the same device recorded it first
        raise DeviceUnauthorized()

    async def _record_auth_request(self, tenant: str, request: AuthRequest) -> AuthSet:
        now = self._clock()
        device = await self._store.get_device_by_identity(tenant, request.id_data_sha256)
        if device is not None and device.decommissioning:
            raise DeviceUnauthorized()
        auth_set = AuthSet(
            id=_new_id(),
            device_id=device.id if device is not None else _new_id(),
            id_data=request.id_data,
            id_data_sha256=request.id_data_sha256,
            pubkey=request.pubkey,
            status=AuthStatus.PENDING,
            ts=now,
        )
        if device is None:
            await self._create_device(tenant, auth_set, DeviceStatus.PENDING)
        else:
            known = device

            async def add_key(tx: DataStore) -> None:
                await tx.insert_auth_set(tenant, auth_set)
                await self._refresh_status(tx, tenant, known.id)

            await self._store.atomically(add_key)
            self._wake()
        return auth_set

    async def _create_device(
        self,
        tenant: str,
        auth_set: AuthSet,
        status: DeviceStatus,
        *,
        actor: Actor | None = None,
    ) -> None:
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
                    *self._audit(tenant, actor, "preauthorize", auth_set),
                ]
            )

        await self._store.atomically(create)
        self._wake()

    async def _accept_preauthorized(self, tenant: str, auth_set: AuthSet) -> AuthSet:
        device = await self._store.get_device(tenant, auth_set.device_id)
        if device is None or device.decommissioning:
            raise DeviceUnauthorized()
        if device.status is not DeviceStatus.ACCEPTED and not await self._can_accept(tenant):
            # NOTE: like Mender, the device is not told why it is refused.
            raise DeviceUnauthorized("unauthorized")

        async def accept(tx: DataStore) -> AuthSet | None:
            return await self._accept(
                tx,
                tenant,
                auth_set.device_id,
                auth_set.id,
                allowed=frozenset({AuthStatus.PREAUTHORIZED}),
            )

        accepted = await self._store.atomically(accept)
        self._wake()
        if accepted is None:
            raise DeviceUnauthorized()
        return accepted

    async def _issue_token(self, tenant: str, auth_set: AuthSet) -> str:
        now = self._clock()
        expires = now + self._lifetime
        claims: dict[str, Any] = {
            "jti": auth_set.id,
            "sub": auth_set.device_id,
            "iss": self._issuer,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "mender.device": True,
            "mender.plan": "enterprise",
            "mender.addons": [{"name": name, "enabled": True} for name in ADDONS],
            "mender.trial": False,
        }
        if tenant:
            claims["mender.tenant"] = tenant
        raw = self._signer.sign(claims)
        token = Token(
            id=auth_set.id, device_id=auth_set.device_id, issued_at=now, expires_at=expires
        )

        async def store_token(tx: DataStore) -> None:
            # Writing to the auth set makes this transaction conflict with any concurrent
            # change of its status, so a stored token always means an accepted auth set.
            if not await tx.stamp_accepted_auth_set(tenant, auth_set.id, now=now):
                raise DeviceUnauthorized()
            await tx.save_token(tenant, token)

        await self._store.atomically(store_token)
        device = await self._store.get_device(tenant, auth_set.device_id)
        if device is not None:
            await self._check_in(tenant, device)
        return raw

    # -- token verification (the gateway's question on every cache miss) -------------------

    async def verify_token(self, raw: str | None) -> None:
        """Check a device token: signature, expiry, revocation, and admission status."""
        if not raw:
            raise TokenInvalidError("Authorization not present in header")
        try:
            unverified = decode_claims(raw)
        except Unauthorized:
            raise TokenInvalidError() from None
        if unverified.get("mender.device") is not True:
            raise TokenInvalidError("not a device token")
        tenant = unverified.get("mender.tenant", "")
        if not isinstance(tenant, str):
            raise TokenInvalidError()
        try:
            claims = self._verifier.verify(raw)
        except TokenExpired:
            jti = unverified.get("jti")
            if isinstance(jti, str):
                await self._store.delete_token(tenant, jti)
            raise TokenExpiredError() from None
        except TokenInvalid:
            raise TokenInvalidError() from None
        jti, device_id = claims["jti"], claims["sub"]
        if not isinstance(jti, str) or not isinstance(device_id, str):
            raise TokenInvalidError()
        # Tokens are deleted in the same transaction that moves their auth set (token id =
        # auth set id) away from accepted, or removes their device; so a stored token means
        # an accepted auth set, and the two remaining lookups can run side by side.
        token, device = await asyncio.gather(
            self._store.get_token(tenant, jti), self._store.get_device(tenant, device_id)
        )
        if token is None or token.device_id != device_id:
            raise TokenInvalidError()
        if device is None or device.decommissioning:
            raise TokenInvalidError()
        await self._check_in(tenant, device)

    async def _check_in(self, tenant: str, device: Device) -> None:
        now = self._clock()
        last = device.check_in_time
        if last is not None and now - last < CHECK_IN_EVERY:
            return
        synced = device.check_in_synced_ts
        if synced is not None and now - synced < CHECK_IN_SYNC_EVERY:
            # Conditional on the value read, so concurrent requests write it once.
            await self._store.touch_check_in(tenant, device.id, now=now, last=last)
            return

        async def sync(tx: DataStore) -> None:
            if await tx.sync_check_in(tenant, device.id, now=now, synced=synced):
                await tx.add_effects([inventory_check_in(tenant, device.id, now)])

        await self._store.atomically(sync)
        self._wake()

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
        for _ in range(_RACE_ATTEMPTS):
            existing = await self._store.get_device_by_identity(tenant, sha)
            if existing is not None:
                if not force:
                    raise DeviceExists((await self._with_auth_sets(tenant, [existing]))[0])
                await self._add_preauthorized_key(tenant, existing, normalized, actor=actor)
                return existing.id
            auth_set = AuthSet(
                id=_new_id(),
                device_id=_new_id(),
                id_data=canonical,
                id_data_sha256=sha,
                pubkey=normalized,
                status=AuthStatus.PREAUTHORIZED,
                ts=self._clock(),
            )
            try:
                await self._create_device(tenant, auth_set, DeviceStatus.PREAUTHORIZED, actor=actor)
            except DuplicateError:
                continue  # the identity was registered concurrently
            return auth_set.device_id
        raise Conflict("device already exists")

    async def _add_preauthorized_key(
        self, tenant: str, device: Device, pubkey: str, *, actor: Actor | None
    ) -> None:
        now = self._clock()

        async def add(tx: DataStore) -> None:
            found = await tx.find_auth_set(
                tenant, id_data_sha256=device.id_data_sha256, pubkey=pubkey
            )
            if found is None:
                found = AuthSet(
                    id=_new_id(),
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
            await self._refresh_status(tx, tenant, device.id)
            await tx.add_effects(self._audit(tenant, actor, "preauthorize", found))

        await self._store.atomically(add)
        self._wake()

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
            await self._refresh_status(tx, tenant, device_id)
            action = "reject" if target is AuthStatus.REJECTED else "update"
            await tx.add_effects(self._audit(tenant, actor, action, current, target))

        await self._store.atomically(demote)
        self._wake()

    async def _accept_by_user(self, tenant: str, auth_set: AuthSet, *, actor: Actor | None) -> None:
        if auth_set.status not in _ACCEPTABLE_FROM:
            raise BadStatusTransition()
        device = await self._store.get_device(tenant, auth_set.device_id)
        if device is None:
            raise DeviceNotFound()
        if device.status is not DeviceStatus.ACCEPTED and not await self._can_accept(tenant):
            raise DeviceLimitReached()

        async def accept(tx: DataStore) -> None:
            accepted = await self._accept(
                tx, tenant, auth_set.device_id, auth_set.id, allowed=_ACCEPTABLE_FROM
            )
            if accepted is not None:
                await tx.add_effects(self._audit(tenant, actor, "accept", accepted))

        await self._store.atomically(accept)
        self._wake()

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
            await self._refresh_status(tx, tenant, device_id)

        await self._store.atomically(delete)
        self._wake()

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
        self._wake()

    async def revoke_token(self, tenant: str, token_id: str) -> None:
        """Delete one token (by its jti), revoking it."""
        if not await self._store.delete_token(tenant, token_id):
            raise TokenNotFound()

    async def get_limit(self, tenant: str, name: str) -> int:
        """The value of a limit (0 = unlimited)."""
        _check_limit_name(name)
        value = await self._store.get_limit(tenant, name)
        return self._default_max_devices if value is None else value

    # -- internal --------------------------------------------------------------------------

    async def set_limit(self, tenant: str, name: str, *, value: int) -> None:
        """Set a tenant's limit."""
        _check_limit_name(name)
        if value < 0:
            raise BadRequest("limit must not be negative")
        await self._store.put_limit(tenant, name, value)

    async def delete_limit(self, tenant: str, name: str) -> None:
        """Remove a tenant's limit (the default applies again)."""
        _check_limit_name(name)
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

    # -- shared steps ----------------------------------------------------------------------

    def _audit(
        self,
        tenant: str,
        actor: Actor | None,
        action: str,
        subject: AuthSet | Device,
        status: AuthStatus | None = None,
    ) -> list[Effect]:
        return device_audit(tenant, actor, action, subject, when=self._clock(), status=status)

    async def _accept(
        self,
        tx: DataStore,
        tenant: str,
        device_id: str,
        auth_id: str,
        *,
        allowed: frozenset[AuthStatus],
    ) -> AuthSet | None:
        # Re-read inside the transaction: a concurrent change may have won the race.
        auth_set = await tx.get_auth_set(tenant, auth_id, device_id=device_id)
        if auth_set is None:
            return None
        if auth_set.status is AuthStatus.ACCEPTED:
            return auth_set
        if auth_set.status not in allowed:
            return None
        # A device has one accepted key: the others are rejected and their tokens go.
        rejected = await tx.reject_accepted_auth_sets(tenant, device_id, keep=auth_id)
        await tx.delete_tokens(tenant, token_ids=rejected)
        await tx.set_auth_set_status(tenant, auth_id, AuthStatus.ACCEPTED)
        device = await tx.get_device(tenant, device_id)
        if device is not None and not device.provisioned:
            # Before the status change, as Mender's workflow does: iot-manager hears that
            # the device is provisioned, then that it is accepted.
            await tx.add_effects(provision_effects(tenant, device, auth_set))
            await tx.set_device_provisioned(tenant, device_id, provisioned=True)
        await self._refresh_status(tx, tenant, device_id)
        return auth_set.model_copy(update={"status": AuthStatus.ACCEPTED})

    async def _refresh_status(self, tx: DataStore, tenant: str, device_id: str) -> Device | None:
        """Recompute the device status from its auth sets; tell the peers when it changes."""
        device = await tx.get_device(tenant, device_id)
        if device is None:
            return None
        auth_sets = await tx.list_auth_sets(tenant, [device_id])
        status = device_status_from([a.status for a in auth_sets])
        if status is device.status:
            return device
        updated = await tx.update_device_status(tenant, device_id, status=status, now=self._clock())
        if updated is not None:
            effects = status_effects(tenant, device_id, status=status, revision=updated.revision)
            if device.status is DeviceStatus.ACCEPTED:
                # Its tokens are gone: an open remote-access connection must go too.
                effects.append(deviceconnect_disconnect(tenant, device_id))
            await tx.add_effects(effects)
        return updated

    async def _can_accept(self, tenant: str) -> bool:
        limit = await self.get_limit(tenant, LIMIT_MAX_DEVICES)
        if limit == 0:
            return True
        accepted = await self._store.count_devices(tenant, status=DeviceStatus.ACCEPTED)
        return accepted < limit

    async def _with_auth_sets(self, tenant: str, devices: Sequence[Device]) -> list[Device]:
        auth_sets = await self._store.list_auth_sets(tenant, [d.id for d in devices])
        by_device: dict[str, list[AuthSet]] = {}
        for auth_set in auth_sets:
            by_device.setdefault(auth_set.device_id, []).append(auth_set)
        return [d.model_copy(update={"auth_sets": tuple(by_device.get(d.id, ()))}) for d in devices]
