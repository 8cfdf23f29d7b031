"""The device's side of deviceauth: auth requests answered with tokens, tokens verified."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from common.core.claims import decode_claims
from common.core.errors import BadRequest, Unauthorized
from common.core.tokens import SigningKey, TokenExpired, TokenInvalid, TokenVerifier
from services.deviceauth.app.admission import RACE_ATTEMPTS, Admission, new_id
from services.deviceauth.app.authreq import AuthRequest, parse_auth_request
from services.deviceauth.app.errors import DeviceUnauthorized, TokenExpiredError, TokenInvalidError
from services.deviceauth.app.keys import SignatureError, verify_signature
from services.deviceauth.clients import inventory_check_in
from services.deviceauth.models import (
    ADDONS,
    AuthSet,
    AuthStatus,
    Device,
    DeviceStatus,
    Token,
)
from services.deviceauth.store import DataStore, DuplicateError

__all__ = ["DeviceAuthApp"]

# The device's check-in time is written at most this often...
CHECK_IN_EVERY: Final = timedelta(minutes=1)
# ...and pushed to inventory at most this often (Mender's cached path does the same).
CHECK_IN_SYNC_EVERY: Final = timedelta(days=1)
# Devices read at once when the gateway reports the tokens it saw used.
_CHECK_IN_BATCH: Final = 1000


class DeviceAuthApp:
    """Authentication of devices: auth requests, their tokens, and token checks."""

    def __init__(
        self,
        store: DataStore,
        admission: Admission,
        *,
        signer: SigningKey,
        verifier: TokenVerifier,
        issuer: str,
        token_lifetime: timedelta,
    ) -> None:
        self._store = store
        self._admission = admission
        self._signer = signer
        self._verifier = verifier
        self._issuer = issuer
        self._lifetime = token_lifetime

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
        if auth_set.status not in (AuthStatus.PREAUTHORIZED, AuthStatus.ACCEPTED):
            raise DeviceUnauthorized()
        return await self._admit(tenant, auth_set)

    async def _auth_set_for(self, tenant: str, request: AuthRequest) -> AuthSet:
        for _ in range(RACE_ATTEMPTS):
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
        now = self._admission.now()
        device = await self._store.get_device_by_identity(tenant, request.id_data_sha256)
        if device is not None and device.decommissioning:
            raise DeviceUnauthorized()
        auth_set = AuthSet(
            id=new_id(),
            device_id=device.id if device is not None else new_id(),
            id_data=request.id_data,
            id_data_sha256=request.id_data_sha256,
            pubkey=request.pubkey,
            status=AuthStatus.PENDING,
            ts=now,
        )
        if device is None:
            await self._admission.create_device(tenant, auth_set, DeviceStatus.PENDING)
        else:
            known = device

            async def add_key(tx: DataStore) -> None:
                await tx.insert_auth_set(tenant, auth_set)
                await self._admission.refresh_status(tx, tenant, known.id)

            await self._store.atomically(add_key)
            self._admission.wake()
        return auth_set

    async def _admit(self, tenant: str, auth_set: AuthSet) -> str:
        """Issue a token to an accepted auth set, accepting a preauthorized one first.

        One transaction does it all (acceptance, check-in, the token and their effects), so
        a device's first authentication costs a handful of writes and one commit.
        """
        now = self._admission.now()

        async def admit(tx: DataStore) -> Token:
            device = await tx.get_device(tenant, auth_set.device_id)
            if device is None or device.decommissioning:
                raise DeviceUnauthorized()
            check_in = _check_in_due(device, now)
            if auth_set.status is AuthStatus.PREAUTHORIZED:
                if (
                    device.status is not DeviceStatus.ACCEPTED
                    and not await self._admission.can_accept(tenant, store=tx)
                ):
                    # NOTE: like Mender, the device is not told why it is refused.
                    raise DeviceUnauthorized("unauthorized")
                accepted = await self._admission.accept(
                    tx,
                    tenant,
                    auth_set.device_id,
                    auth_set.id,
                    allowed=frozenset({AuthStatus.PREAUTHORIZED}),
                    device=device,
                    read=auth_set,
                    check_in=now if check_in is _CheckIn.SYNC else None,
                    issuing=True,
                )
                if accepted is None:
                    raise DeviceUnauthorized()
                if check_in is _CheckIn.TOUCH:
                    await tx.touch_check_in(tenant, device.id, now=now, last=device.check_in_time)
            else:
                # Writing to the auth set makes this transaction conflict with any concurrent
                # change of its status, so a stored token always means an accepted auth set.
                if not await tx.stamp_accepted_auth_set(tenant, auth_set.id, now=now):
                    raise DeviceUnauthorized()
                await _record_check_in(tx, tenant, device, now, check_in)
            # Never dated before a revocation of its id or tenant, which would refuse it.
            issued = datetime.fromtimestamp(await tx.issue_time(tenant, auth_set.id, now=now), UTC)
            token = Token(
                id=auth_set.id,
                device_id=auth_set.device_id,
                issued_at=issued,
                expires_at=issued + self._lifetime,
            )
            await tx.save_token(tenant, token)
            return token

        token = await self._store.atomically(admit)
        self._admission.wake()
        claims: dict[str, Any] = {
            "jti": token.id,
            "sub": token.device_id,
            "iss": self._issuer,
            "iat": int(token.issued_at.timestamp()),
            "exp": int(token.expires_at.timestamp()),
            "mender.device": True,
            "mender.plan": "enterprise",
            "mender.addons": [{"name": name, "enabled": True} for name in ADDONS],
            "mender.trial": False,
        }
        if tenant:
            claims["mender.tenant"] = tenant
        return self._signer.sign(claims)

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

    async def check_in(self, devices: Iterable[tuple[str, str]]) -> None:
        """Record that devices (tenant, device id) used their tokens (the gateway reports).

        The devices are read in batches, one query each; the check-in times that are due
        (at most once a minute per device) are written with one bulk write per batch, and
        those due to reach inventory (once a day) one device at a time, with their effect."""
        by_tenant: dict[str, set[str]] = {}
        for tenant, device_id in devices:
            by_tenant.setdefault(tenant, set()).add(device_id)
        now = self._admission.now()
        for tenant, ids in by_tenant.items():
            ordered = sorted(ids)
            for first in range(0, len(ordered), _CHECK_IN_BATCH):
                batch = ordered[first : first + _CHECK_IN_BATCH]
                touches: list[tuple[str, datetime | None]] = []
                for device in await self._store.get_devices(tenant, batch):
                    due = _check_in_due(device, now)
                    if device.decommissioning or due is _CheckIn.NONE:
                        continue
                    if due is _CheckIn.TOUCH:
                        touches.append((device.id, device.check_in_time))
                    else:
                        await self._sync_check_in(tenant, device, now)
                await self._store.touch_check_ins(tenant, touches, now=now)

    async def _check_in(self, tenant: str, device: Device) -> None:
        now = self._admission.now()
        due = _check_in_due(device, now)
        if due is _CheckIn.TOUCH:
            # Conditional on the value read, so concurrent requests write it once.
            await self._store.touch_check_in(tenant, device.id, now=now, last=device.check_in_time)
        elif due is _CheckIn.SYNC:
            await self._sync_check_in(tenant, device, now)

    async def _sync_check_in(self, tenant: str, device: Device, now: datetime) -> None:
        await self._store.atomically(
            lambda tx: _record_check_in(tx, tenant, device, now, _CheckIn.SYNC)
        )
        self._admission.wake()


class _CheckIn(enum.Enum):
    """What a device's use of its token makes of its check-in time."""

    # Written less than CHECK_IN_EVERY ago: nothing.
    NONE = "none"
    # Published to inventory less than CHECK_IN_SYNC_EVERY ago: written here only.
    TOUCH = "touch"
    # Written and published to inventory.
    SYNC = "sync"


def _check_in_due(device: Device, now: datetime) -> _CheckIn:
    last = device.check_in_time
    if last is not None and now - last < CHECK_IN_EVERY:
        return _CheckIn.NONE
    synced = device.check_in_synced_ts
    if synced is not None and now - synced < CHECK_IN_SYNC_EVERY:
        return _CheckIn.TOUCH
    return _CheckIn.SYNC


async def _record_check_in(
    tx: DataStore, tenant: str, device: Device, now: datetime, due: _CheckIn
) -> None:
    """Record a check-in that is `due` in `tx`, conditional on the values read, so
    concurrent requests write it once."""
    if due is _CheckIn.TOUCH:
        await tx.touch_check_in(tenant, device.id, now=now, last=device.check_in_time)
    elif due is _CheckIn.SYNC and await tx.sync_check_in(
        tenant, device.id, now=now, synced=device.check_in_synced_ts
    ):
        await tx.add_effects([inventory_check_in(tenant, device.id, now)])
