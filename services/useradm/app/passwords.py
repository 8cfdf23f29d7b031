"""Password hashing with bcrypt, off the event loop (a check costs tens of milliseconds)."""

from __future__ import annotations

import asyncio
from typing import Final

import bcrypt

__all__ = ["MAX_PASSWORD_BYTES", "PasswordHasher"]

# bcrypt only looks at the first 72 bytes; longer passwords are refused rather than
# silently truncated (Mender's Go bcrypt refuses them as well).
MAX_PASSWORD_BYTES: Final = 72


class PasswordHasher:
    """Hashes and checks passwords with a configured bcrypt cost."""

    def __init__(self, *, cost: int) -> None:
        self._cost = cost
        self._dummy: bytes | None = None

    async def hash(self, password: str) -> str:
        """Return the bcrypt hash of a password (at most 72 bytes)."""
        raw = password.encode()
        digest = await asyncio.to_thread(bcrypt.hashpw, raw, bcrypt.gensalt(self._cost))
        return digest.decode("ascii")

    async def check(self, password: str, hashed: str | None) -> bool:
        """Whether the password matches the hash; None costs the same time and fails."""
        raw = password.encode()
        if len(raw) > MAX_PASSWORD_BYTES:
            return False
        if hashed is None:
            # Spend the time a real check would, so a response time does not tell whether
            # an email is registered.
            if self._dummy is None:
                self._dummy = await asyncio.to_thread(
                    bcrypt.hashpw, b"not-a-password", bcrypt.gensalt(self._cost)
                )
            await asyncio.to_thread(bcrypt.checkpw, raw, self._dummy)
            return False
        try:
            return await asyncio.to_thread(bcrypt.checkpw, raw, hashed.encode("ascii"))
        except (ValueError, UnicodeEncodeError):  # not a bcrypt hash: nothing can match it
            return False
