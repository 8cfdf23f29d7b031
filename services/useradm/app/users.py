"""User accounts: creation, listing, updates, removal (with their tokens), tenants."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Final

from common.core.audit import Actor, AuditObject, audit_event
from common.core.outbox import Effect
from services.useradm.app import errors
from services.useradm.app.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from services.useradm.models import User, UserChange, UserFilter
from services.useradm.store import DataStore, DuplicateEmail, DuplicateUserId

__all__ = [
    "MAX_EMAIL_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "UsersApp",
    "check_password",
    "normalize_email",
]

MIN_PASSWORD_LENGTH: Final = 8
MAX_EMAIL_LENGTH: Final = 4095
_ME: Final = "me"
# The address syntax browsers accept for <input type=email>: a dot-atom local part and
# dot-separated host labels.
_EMAIL: Final = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_USER_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")


def _now() -> datetime:
    return datetime.now(UTC)


def user_audit(
    tenant_id: str, actor: Actor | None, action: str, user: User, change: str = ""
) -> list[Effect]:
    """The audit event of an operator's change to a user account (none without one)."""
    if actor is None:
        return []
    event = audit_event(
        tenant_id,
        actor=actor,
        action=action,
        object_=AuditObject.user(user.id, user.email),
        change=change,
        when=_now(),
    )
    return [event]


def normalize_email(raw: str) -> str:
    """Return the lower-cased email; raise InvalidEmail when it is not acceptable."""
    email = raw.lower()
    if not email:
        raise errors.InvalidEmail("email: cannot be blank")
    if len(email) > MAX_EMAIL_LENGTH:
        raise errors.InvalidEmail(f"email: the length must be at most {MAX_EMAIL_LENGTH}")
    if not email.isascii():
        raise errors.InvalidEmail("email: must contain ASCII characters only")
    if _EMAIL.fullmatch(email) is None:
        raise errors.InvalidEmail("email: must be a valid email address")
    return email


def check_password(password: str) -> None:
    """Raise InvalidPassword when a new password is too short or too long."""
    if not password:
        raise errors.InvalidPassword("password: cannot be blank")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise errors.InvalidPassword(
            f"password: must be minimum {MIN_PASSWORD_LENGTH} characters long"
        )
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise errors.InvalidPassword(f"password: must be at most {MAX_PASSWORD_BYTES} bytes long")


def _similar(email: str, password: str) -> bool:
    # Mender's rule: a password that appears within the email address is too guessable.
    return bool(password) and password.lower() in email.lower()


def _check_user_id(user_id: str) -> None:
    if _USER_ID.fullmatch(user_id) is None or user_id.lower() == _ME:
        raise errors.InvalidUserId(
            "user id: 1-128 letters, digits, '.', '_' or '-', not starting with a symbol, "
            "and not 'me'"
        )


class UsersApp:
    """The use-cases of user accounts within a tenant."""

    def __init__(self, store: DataStore, hasher: PasswordHasher) -> None:
        self._store = store
        self._hasher = hasher

    async def create_user(
        self,
        tenant_id: str,
        *,
        email: str,
        password: str | None = None,
        password_hash: str | None = None,
        user_id: str | None = None,
        actor: Actor | None = None,
    ) -> User:
        """Create a user from a password (or an existing bcrypt hash); return it."""
        address = normalize_email(email)
        if (password is None) == (password_hash is None):
            raise errors.InvalidPassword("password *or* password_hash must be provided")
        if password is not None:
            check_password(password)
            if _similar(address, password):
                raise errors.PasswordTooSimilar()
            hashed = await self._hasher.hash(password)
        else:
            assert password_hash is not None
            if _BCRYPT_HASH.fullmatch(password_hash) is None:
                raise errors.InvalidPassword("password_hash: must be a bcrypt hash")
            hashed = password_hash
        if user_id is not None:
            _check_user_id(user_id)
        now = _now()
        user = User(
            id=user_id or str(uuid.uuid4()),
            email=address,
            password_hash=hashed,
            created_ts=now,
            updated_ts=now,
        )
        try:
            await self._store.insert_user(
                tenant_id, user, effects=user_audit(tenant_id, actor, "create", user)
            )
        except DuplicateEmail:
            raise errors.DuplicateEmail() from None
        except DuplicateUserId:
            raise errors.DuplicateUserId() from None
        return user

    async def list_users(self, tenant_id: str, filter_: UserFilter) -> list[User]:
        """List the tenant's users matching a filter, oldest first."""
        if filter_.emails is not None:
            filter_ = UserFilter(
                ids=filter_.ids,
                emails=tuple(e.lower() for e in filter_.emails),
                created_after=filter_.created_after,
                created_before=filter_.created_before,
                updated_after=filter_.updated_after,
                updated_before=filter_.updated_before,
            )
        return await self._store.list_users(tenant_id, filter_)

    async def get_user(self, tenant_id: str, user_id: str, *, caller_id: str = "") -> User:
        """Return one user (`me` is the caller); UserNotFound otherwise."""
        user = await self._store.get_user(tenant_id, self._resolve(user_id, caller_id))
        if user is None:
            raise errors.UserNotFound()
        return user

    async def update_user(
        self,
        tenant_id: str,
        user_id: str,
        *,
        caller_id: str,
        caller_token: str | None,
        email: str | None = None,
        password: str | None = None,
        current_password: str | None = None,
        actor: Actor | None = None,
    ) -> None:
        """Change a user's email and/or password.

        Only users change their own password, and changing one's own password or email
        takes the current password. A changed email or password ends the user's other
        sessions and personal access tokens; the caller's own token survives.
        """
        # Empty strings mean "not given", as in Mender's JSON decoding.
        email = email or None
        password = password or None
        current_password = current_password or None
        if email is None and password is None:
            raise errors.EmptyUpdate()
        new_email = normalize_email(email) if email is not None else None
        if password is not None:
            check_password(password)
        target = self._resolve(user_id, caller_id)
        user = await self._store.get_user(tenant_id, target)
        if user is None:
            raise errors.UserNotFound()
        me = user.id == caller_id
        if password is not None and not me:
            raise errors.CannotModifyPassword()
        credentials_change = password is not None or (
            new_email is not None and new_email != user.email
        )
        if me and credentials_change:
            if current_password is None or not await self._hasher.check(
                current_password, user.password_hash
            ):
                raise errors.CurrentPasswordMismatch()
        if password is not None:
            if _similar(new_email or user.email, password) or _similar(user.email, password):
                raise errors.PasswordTooSimilar()
        elif new_email is not None and current_password is not None:
            if _similar(new_email, current_password):
                raise errors.PasswordTooSimilar()
        change = UserChange(
            updated_ts=_now(),
            email=new_email,
            password_hash=await self._hasher.hash(password) if password is not None else None,
        )
        said = []
        if new_email is not None and new_email != user.email:
            said.append(f"email changed from {user.email} to {new_email}")
        if password is not None:
            said.append("password changed")
        changed = user.model_copy(update={"email": new_email or user.email})
        effects = user_audit(tenant_id, actor, "update", changed, "; ".join(said))
        try:
            found = await self._store.update_user(
                tenant_id,
                user.id,
                change,
                revoke_tokens=credentials_change,
                keep_token=caller_token if me else None,
                effects=effects,
            )
        except DuplicateEmail:
            raise errors.DuplicateEmail() from None
        if not found:
            raise errors.UserNotFound()

    async def delete_user(
        self, tenant_id: str, user_id: str, *, caller_id: str = "", actor: Actor | None = None
    ) -> None:
        """Remove a user with their tokens and settings (nothing to do when absent)."""
        target = self._resolve(user_id, caller_id)
        user = await self._store.get_user(tenant_id, target) if actor is not None else None
        effects = user_audit(tenant_id, actor, "delete", user) if user is not None else []
        await self._store.delete_user(tenant_id, target, effects=effects)

    async def create_tenant(self, tenant_id: str) -> None:
        """Record a tenant; its users are created afterwards."""
        if not tenant_id:
            raise errors.InvalidTenant("tenant_id: cannot be blank")
        await self._store.add_tenant(tenant_id, _now())

    @staticmethod
    def _resolve(user_id: str, caller_id: str) -> str:
        if user_id.lower() == _ME and caller_id:
            return caller_id
        return user_id
