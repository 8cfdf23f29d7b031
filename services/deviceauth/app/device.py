"""The device's side of deviceauth: auth requests answered with tokens, tokens verified."""

from __future__ import annotations

import asyncio
from datetime import timedelta
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
        if auth_set.status is AuthStatus.PREAUTHORIZED:
            auth_set = await self._accept_preauthorized(tenant, auth_set)
        if auth_set.status is not AuthStatus.ACCEPTED:
            raise DeviceUnauthorized()
        return await self._issue_token(tenant, auth_set)

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

    async def _accept_preauthorized(self, tenant: str, auth_set: AuthSet) -> AuthSet:
        device = await self._store.get_device(tenant, auth_set.device_id)
        if device is None or device.decommissioning:
            raise DeviceUnauthorized()
        if device.status is not DeviceStatus.ACCEPTED and not await self._admission.can_accept(
            tenant
        ):
            # NOTE: like Mender, the device is not told why it is refused.
            raise DeviceUnauthorized("unauthorized")

        async def accept(tx: DataStore) -> AuthSet | None:
            return await self._admission.accept(
                tx,
                tenant,
                auth_set.device_id,
                auth_set.id,
                allowed=frozenset({AuthStatus.PREAUTHORIZED}),
            )

        accepted = await self._store.atomically(accept)
        self._admission.wake()
        if accepted is None:
            raise DeviceUnauthorized()
        return accepted

    async def _issue_token(self, tenant: str, auth_set: AuthSet) -> str:
        now = self._admission.now()
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
        now = self._admission.now()
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
        self._admission.wake()
