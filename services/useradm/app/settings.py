"""The web UI's settings: one document per tenant and one per user, guarded by ETags."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any, Final

from services.useradm.app import errors
from services.useradm.models import StoredSettings
from services.useradm.store import DataStore, SettingsConflict

__all__ = ["MAX_SETTINGS", "SettingsApp"]

MAX_SETTINGS: Final = 1024
MAX_NAME_LENGTH: Final = 127
MAX_STRING_LENGTH: Final = 4095


def _finite(value: Any) -> bool:
    # JSON decoding lets NaN and Infinity through; they cannot be stored or sent back.
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _validate(values: Mapping[str, Any]) -> None:
    if len(values) > MAX_SETTINGS:
        raise errors.InvalidSettings(f"at most {MAX_SETTINGS} settings are allowed")
    for name, value in values.items():
        if len(name) > MAX_NAME_LENGTH:
            raise errors.InvalidSettings(
                f"setting names are at most {MAX_NAME_LENGTH} characters long"
            )
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            raise errors.InvalidSettings(
                f"{name}: string values are at most {MAX_STRING_LENGTH} characters long"
            )
        if not _finite(value):
            raise errors.InvalidSettings(f"{name}: numbers must be finite")


def _etag(if_match: str | None) -> str | None:
    if if_match is None:
        return None
    # The ETag is sent bare; a client quoting it as RFC 9110 does means the same tag.
    tag = if_match.strip()
    if len(tag) >= 2 and tag[0] == tag[-1] == '"':
        tag = tag[1:-1]
    return tag or None


class SettingsApp:
    """Reads and replaces settings documents."""

    def __init__(self, store: DataStore) -> None:
        self._store = store

    async def get(self, tenant_id: str, *, user_id: str | None = None) -> StoredSettings | None:
        """The tenant's settings (or the user's, with `user_id`); None when never saved."""
        return await self._store.get_settings(tenant_id, user_id=user_id)

    async def save(
        self,
        tenant_id: str,
        values: dict[str, Any],
        *,
        user_id: str | None = None,
        if_match: str | None = None,
    ) -> str:
        """Replace the settings (only if `if_match` is their ETag); return the new ETag."""
        _validate(values)
        etag = str(uuid.uuid4())
        try:
            await self._store.save_settings(
                tenant_id, values, etag=etag, user_id=user_id, if_match=_etag(if_match)
            )
        except SettingsConflict:
            raise errors.SettingsETagMismatch() from None
        return etag
