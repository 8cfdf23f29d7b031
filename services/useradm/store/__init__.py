"""useradm's storage interface; `MongoStore` implements it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from common.core.outbox import Effect
from services.useradm.models import StoredSettings, StoredToken, User, UserChange, UserFilter

__all__ = [
    "DataStore",
    "DuplicateEmail",
    "DuplicateTokenName",
    "DuplicateUserId",
    "SettingsConflict",
    "StoreError",
]


class StoreError(Exception):
    """Base of the conditions a store reports to the app layer."""


class DuplicateEmail(StoreError):
    """Another user already has the email (emails are unique across tenants)."""


class DuplicateUserId(StoreError):
    """Another user already has the id."""


class DuplicateTokenName(StoreError):
    """The user already has a personal access token of that name."""


class SettingsConflict(StoreError):
    """The stored settings do not carry the ETag the write was conditioned on."""


class DataStore(Protocol):
    """Where users, tokens and settings live; every method is confined to one tenant."""

    # -- users -----------------------------------------------------------------------------

    async def insert_user(
        self, tenant_id: str, user: User, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Store a new user with `effects`; DuplicateEmail or DuplicateUserId when taken."""
        ...

    async def get_user(self, tenant_id: str, user_id: str) -> User | None:
        """Return one user, or None."""
        ...

    async def get_user_by_email(self, tenant_id: str, email: str) -> User | None:
        """Return the user with a (lower-cased) email, or None."""
        ...

    async def user_exists(self, tenant_id: str, user_id: str) -> bool:
        """Whether the user exists (an index-only check for token verification)."""
        ...

    async def list_users(self, tenant_id: str, filter_: UserFilter) -> list[User]:
        """Return the matching users, oldest first."""
        ...

    async def update_user(
        self,
        tenant_id: str,
        user_id: str,
        change: UserChange,
        *,
        revoke_tokens: bool = False,
        keep_token: str | None = None,
        effects: Sequence[Effect] = (),
    ) -> bool:
        """Apply a change (False: no such user); DuplicateEmail when the email is taken.

        With `revoke_tokens`, the user's tokens except `keep_token` are deleted in the same
        transaction, as are `effects` recorded.
        """
        ...

    async def set_login_ts(self, tenant_id: str, user_id: str, when: datetime) -> None:
        """Record a successful login."""
        ...

    async def delete_user(
        self, tenant_id: str, user_id: str, *, effects: Sequence[Effect] = ()
    ) -> bool:
        """Delete a user with their tokens and settings, with `effects`; False (and no
        effects) when there was no such user."""
        ...

    async def add_tenant(self, tenant_id: str, when: datetime) -> None:
        """Record a tenant (idempotent)."""
        ...

    # -- tokens ----------------------------------------------------------------------------

    async def insert_token(
        self, tenant_id: str, token: StoredToken, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Store an issued token with `effects`; DuplicateTokenName for a taken personal
        token name."""
        ...

    async def trim_sessions(self, tenant_id: str, user_id: str, *, keep: int, current: str) -> int:
        """Delete a user's login tokens beyond the `keep` newest (never `current`); count them."""
        ...

    async def get_token(self, tenant_id: str, token_id: str) -> StoredToken | None:
        """Return one token record, or None (revoked, logged out or expired)."""
        ...

    async def touch_token(self, tenant_id: str, token_id: str, when: datetime) -> None:
        """Record the use of a personal access token."""
        ...

    async def delete_token(
        self, tenant_id: str, *, user_id: str, token_id: str, effects: Sequence[Effect] = ()
    ) -> bool:
        """Delete one of a user's tokens, with `effects`; False (and no effects) when it did
        not exist."""
        ...

    async def delete_tokens(self, tenant_id: str, *, user_id: str | None = None) -> int:
        """Delete the tokens of a user, or of the whole tenant; return how many went."""
        ...

    async def count_personal_tokens(self, tenant_id: str, user_id: str) -> int:
        """Count a user's personal access tokens."""
        ...

    async def list_personal_tokens(self, tenant_id: str, user_id: str) -> list[StoredToken]:
        """Return a user's personal access tokens, oldest first."""
        ...

    # -- settings --------------------------------------------------------------------------

    async def get_settings(self, tenant_id: str, *, user_id: str | None) -> StoredSettings | None:
        """Return the tenant's settings (or one user's, with `user_id`), or None."""
        ...

    async def save_settings(
        self,
        tenant_id: str,
        values: dict[str, Any],
        *,
        etag: str,
        user_id: str | None,
        if_match: str | None,
    ) -> None:
        """Replace the settings with a new ETag; SettingsConflict when `if_match` fails."""
        ...
