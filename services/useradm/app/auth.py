"""Login, logout, personal access tokens and the verification of user tokens."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from common.core.audit import Actor, AuditObject, audit_event
from common.core.outbox import Effect
from common.core.tokens import TokenExpired, TokenInvalid
from services.useradm.app import errors
from services.useradm.app.keys import KeyRing
from services.useradm.app.organization import organization_claims
from services.useradm.app.passwords import PasswordHasher
from services.useradm.models import SCOPE_ALL, StoredToken
from services.useradm.store import DataStore, DuplicateTokenName

__all__ = ["MAX_TOKEN_NAME_LENGTH", "PAT_MAX_EXPIRES_IN", "AuthApp", "TokenPolicy"]

# Personal access tokens live at most a year; 0 means they never expire.
PAT_MAX_EXPIRES_IN: Final = 31536000
MAX_TOKEN_NAME_LENGTH: Final = 4095
# A personal access token's `last_used` is refreshed at most this often, so that
# verification (on every request the gateway has not cached) rarely writes.
_LAST_USED_PRECISION: Final = timedelta(minutes=5)
# Mender's gateway hands the original URI over; it names at least a service and version.
_MIN_URI_SEGMENTS: Final = 4
# NOTE: login looks users up in the default tenant, as open-source Mender does: in
# multi-tenant Mender the tenant of an email comes from tenantadm, which Fleetport has not.
_LOGIN_TENANT: Final = ""


def _now() -> datetime:
    return datetime.now(UTC)


def _token_audit(
    tenant_id: str, actor: Actor | None, action: str, token: StoredToken
) -> list[Effect]:
    """The audit event of a user creating or deleting a personal access token."""
    if actor is None or token.name is None:
        return []
    event = audit_event(
        tenant_id,
        actor=actor,
        action=action,
        object_=AuditObject.named("user_access_token", token.id, token.name),
        when=_now(),
    )
    return [event]


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """How tokens are issued: issuer, login token lifetime and per-user limits (0: none)."""

    issuer: str
    expiration: timedelta
    sessions_per_user: int
    tokens_per_user: int


class AuthApp:
    """Issues user tokens and decides whether a presented token is still good."""

    def __init__(
        self,
        store: DataStore,
        hasher: PasswordHasher,
        keys: KeyRing,
        policy: TokenPolicy,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._keys = keys
        self._policy = policy

    async def _issue(
        self,
        tenant_id: str,
        subject: str,
        *,
        lifetime: timedelta | None,
        name: str | None = None,
    ) -> tuple[str, StoredToken]:
        now = _now()
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "sub": subject,
            "iss": self._policy.issuer,
            "iat": issued,
            "nbf": issued,
            "scp": SCOPE_ALL,
            "mender.user": True,
        }
        expires_at = None
        if lifetime is not None:
            claims["exp"] = issued + int(lifetime.total_seconds())
            expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        if tenant_id:
            claims["mender.tenant"] = tenant_id
        claims.update(organization_claims(tenant_id))
        record = StoredToken(
            id=claims["jti"], subject=subject, issued_at=now, expires_at=expires_at, name=name
        )
        return self._keys.sign(claims), record

    async def login(self, *, email: str, password: str, no_expiry: bool = False) -> str:
        """Check an email and password; return a new login token (InvalidCredentials)."""
        user = None
        if email:
            user = await self._store.get_user_by_email(_LOGIN_TENANT, email.lower())
        if not await self._hasher.check(password, user.password_hash if user else None):
            raise errors.InvalidCredentials()
        assert user is not None
        lifetime = None if no_expiry else self._policy.expiration
        token, record = await self._issue(_LOGIN_TENANT, user.id, lifetime=lifetime)
        await self._store.insert_token(_LOGIN_TENANT, record)
        if self._policy.sessions_per_user > 0:
            await self._store.trim_sessions(
                _LOGIN_TENANT, user.id, keep=self._policy.sessions_per_user, current=record.id
            )
        await self._store.set_login_ts(_LOGIN_TENANT, user.id, record.issued_at)
        return token

    async def logout(self, tenant_id: str, *, user_id: str, token_id: str | None) -> None:
        """End the session of a token: it stops verifying at once."""
        # A token without an id was never issued here, so there is no session to end.
        if token_id is not None:
            await self._store.delete_token(tenant_id, user_id=user_id, token_id=token_id)

    async def verify(self, token: str, *, forwarded_uri: str, forwarded_method: str) -> None:
        """Accept a token for the described request, or raise the reason it is refused.

        Signature (with the key its `kid` names), expiry, scope, that it is a user token,
        that the user exists and that the token was not revoked or logged out.
        """
        try:
            claims = self._keys.verify(token)
        except TokenExpired:
            raise errors.TokenExpired() from None
        except TokenInvalid:
            raise errors.InvalidToken() from None
        if not forwarded_uri or len(forwarded_uri.split("/")) < _MIN_URI_SEGMENTS:
            raise errors.MissingForwardedHeaders(
                f"can't parse service name from original uri {forwarded_uri!r}"
            )
        if not forwarded_method:
            raise errors.MissingForwardedHeaders("can't parse original request method")
        subject, token_id = claims["sub"], claims["jti"]
        tenant_id = claims.get("mender.tenant", "")
        if not isinstance(subject, str) or not isinstance(token_id, str):
            raise errors.InvalidToken()
        if not isinstance(tenant_id, str) or claims.get("mender.user") is not True:
            raise errors.InvalidToken("unauthorized")
        if claims.get("scp") != SCOPE_ALL:
            raise errors.ScopeForbidden()
        record, user_exists = await asyncio.gather(
            self._store.get_token(tenant_id, token_id),
            self._store.user_exists(tenant_id, subject),
        )
        if record is None or record.subject != subject or not user_exists:
            raise errors.InvalidToken("unauthorized")
        if record.personal:
            now = _now()
            if record.last_used is None or record.last_used <= now - _LAST_USED_PRECISION:
                await self._store.touch_token(tenant_id, token_id, now)

    async def issue_personal_token(
        self,
        tenant_id: str,
        user_id: str,
        *,
        name: str,
        expires_in: int,
        actor: Actor | None = None,
    ) -> str:
        """Create a named token for the caller (`expires_in` seconds, 0 = never expires)."""
        if not name:
            raise errors.InvalidTokenRequest("name: cannot be blank")
        if len(name) > MAX_TOKEN_NAME_LENGTH:
            raise errors.InvalidTokenRequest(
                f"name: the length must be at most {MAX_TOKEN_NAME_LENGTH}"
            )
        if expires_in < 0:
            raise errors.InvalidTokenRequest("expires_in: must be no less than 0")
        if expires_in > PAT_MAX_EXPIRES_IN:
            raise errors.InvalidTokenRequest(
                f"expires_in: must be no greater than {PAT_MAX_EXPIRES_IN}"
            )
        limit = self._policy.tokens_per_user
        if limit > 0 and await self._store.count_personal_tokens(tenant_id, user_id) >= limit:
            raise errors.TooManyTokens()
        lifetime = timedelta(seconds=expires_in) if expires_in else None
        token, record = await self._issue(tenant_id, user_id, lifetime=lifetime, name=name)
        effects = _token_audit(tenant_id, actor, "create", record)
        try:
            await self._store.insert_token(tenant_id, record, effects=effects)
        except DuplicateTokenName:
            raise errors.DuplicateTokenName() from None
        return token

    async def list_personal_tokens(self, tenant_id: str, user_id: str) -> list[StoredToken]:
        """The caller's personal access tokens, oldest first."""
        return await self._store.list_personal_tokens(tenant_id, user_id)

    async def revoke_token(
        self, tenant_id: str, user_id: str, token_id: str, *, actor: Actor | None = None
    ) -> None:
        """Delete one of the caller's tokens (nothing to do when absent)."""
        record = await self._store.get_token(tenant_id, token_id) if actor is not None else None
        effects = _token_audit(tenant_id, actor, "delete", record) if record is not None else []
        await self._store.delete_token(
            tenant_id, user_id=user_id, token_id=token_id, effects=effects
        )

    async def revoke_tokens(self, tenant_id: str, *, user_id: str | None = None) -> int:
        """Delete every token of a user, or of the whole tenant; return how many."""
        return await self._store.delete_tokens(tenant_id, user_id=user_id or None)
