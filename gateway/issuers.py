"""What the gateway knows of a token issuer (deviceauth, useradm): its keys and revocations.

`Issuer` holds the public keys that verify the issuer's tokens, read from its internal
`…/tokens/keys` (a JWK set), and the revocations it has recorded, read from its internal
`…/tokens/revocations` feed (`common.core.revocations`): first whole, then by long polls
from the last sequence number seen, so a gateway that starts late or loses the connection
catches up by itself. With NATS, the issuer also publishes each revocation as it happens;
the gateway applies it at once, and the feed stays the source of truth for what a message
lost. A change made through this gateway is applied before the issuer's answer is relayed
(`catch_up`), so its client never sees a token it just revoked still work.

Revocations are kept until the tokens they refuse would have expired anyway, so memory
holds only what can still matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import aiohttp

from common.core.tokens import TokenVerifier, UnknownKey, verifying_key_from_jwk
from gateway.metrics import REVOCATION_SEQUENCE, REVOCATION_SYNCED

__all__ = ["Issuer", "IssuerUnavailable", "RevocationState", "TokenUse"]

_log = logging.getLogger("gateway.issuers")
# A long poll of the feed is held this long by the issuer (seconds). A stopping issuer
# answers its requests in flight before it exits, so this bounds how long a stop takes.
_LONG_POLL: Final = 5.0
# After a failed read of the keys or the feed, the next try waits this long.
_RETRY: Final = 1.0
# Expired revocations are dropped at most this often (seconds).
_PRUNE_EVERY: Final = 60.0
# A token is reported used to its issuer at most this often (a device's check-in time has
# this precision at deviceauth), in batches (seconds).
_REPORT_EVERY: Final = 60.0
_MAX_BATCH: Final = 10_000

# A token used: tenant, subject, token id.
TokenUse = tuple[str, str, str]


class IssuerUnavailable(Exception):
    """The issuer's keys or revocations are not known yet: tokens cannot be checked."""


class RevocationState:
    """Key (`jti:<id>`, `tenant:<id>`) → (tokens issued before this second are refused,
    when that stops mattering)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, tuple[int, int]] = {}
        self._wall_clock = wall_clock
        self._pruned = wall_clock()

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Merge revocations (in any order, any number of times: the result is the same)."""
        for entry in entries:
            key, not_before, expires = entry["key"], entry["not_before"], entry["expires"]
            if not isinstance(key, str) or not isinstance(not_before, int):
                continue
            old = self._entries.get(key)
            if old is not None:
                not_before, expires = max(old[0], not_before), max(old[1], expires)
            self._entries[key] = (not_before, int(expires))
        now = self._wall_clock()
        if now - self._pruned >= _PRUNE_EVERY:
            self._pruned = now
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}

    def refuses(self, keys: Iterable[str], issued_at: int) -> bool:
        """Whether a token issued at `issued_at` under these keys is revoked."""
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and issued_at < entry[0]:
                return True
        return False


class Issuer:
    """One issuer's keys and revocation state, kept current from its internal API."""

    def __init__(
        self,
        name: str,
        base: str,
        session: aiohttp.ClientSession,
        *,
        require: tuple[str, ...],
        timeout: float,
        key_refetch_interval: float,
        report_interval: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.revocations = RevocationState(wall_clock)
        self._keys_url = f"{base}{_PREFIXES[name]}/tokens/keys"
        self._feed_url = f"{base}{_PREFIXES[name]}/tokens/revocations"
        self._used_url = f"{base}{_PREFIXES[name]}/tokens/used"
        self._session = session
        self._require = require
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._poll_timeout = aiohttp.ClientTimeout(total=timeout + _LONG_POLL)
        self._refetch_interval = key_refetch_interval
        self._report_interval = report_interval
        self._verifier: TokenVerifier | None = None
        self._refetched_at = -float("inf")
        self._key_lock = asyncio.Lock()
        self._last = 0
        self._synced = asyncio.Event()
        # One catch-up at a time; the follower's reads go on meanwhile (applying the same
        # entries twice changes nothing).
        self._catch_up_lock = asyncio.Lock()
        # Tokens reported used, and when; those to report next.
        self._reported: dict[TokenUse, float] = {}
        self._unreported: list[TokenUse] = []

    @property
    def ready(self) -> bool:
        """Keys loaded and revocations read at least once."""
        return self._verifier is not None and self._synced.is_set()

    @property
    def last_sequence(self) -> int:
        """The sequence number up to which the feed has been read."""
        return self._last

    async def verify(self, token: str) -> dict[str, Any]:
        """Check the signature and expiry; refetch the keys once when none fits.

        Raises what `TokenVerifier.verify` raises, or IssuerUnavailable.
        """
        verifier = self._verifier
        if verifier is None or not self._synced.is_set():
            raise IssuerUnavailable(self.name)
        try:
            return verifier.verify(token)
        except UnknownKey:
            # Perhaps the issuer has a new key: ask, but not more often than the interval,
            # so forged tokens cannot make the gateway hammer the issuer.
            if not await self._refetch_keys():
                raise
            assert self._verifier is not None
            return self._verifier.verify(token)

    async def _refetch_keys(self) -> bool:
        async with self._key_lock:
            if time.monotonic() - self._refetched_at < self._refetch_interval:
                return False
            self._refetched_at = time.monotonic()
            try:
                await self._load_keys()
            except _READ_ERRORS as exc:
                _log.warning("cannot read the keys of %s: %s", self.name, exc)
                return False
            return True

    async def _load_keys(self) -> None:
        document = await self._get(self._keys_url, {}, self._timeout)
        keys = [verifying_key_from_jwk(jwk) for jwk in document["keys"]]
        self._verifier = TokenVerifier(keys, require=self._require)

    async def _get(self, url: str, params: dict[str, str], limit: aiohttp.ClientTimeout) -> Any:
        async with self._session.get(url, params=params, timeout=limit) as resp:
            if resp.status != 200:
                raise ValueError(f"{url} answered {resp.status}")
            return await resp.json()

    async def _read_feed(self, wait: float) -> bool:
        """Read the feed after the last sequence number seen; True when there is more."""
        params = {"after": str(self._last), "wait": str(wait)}
        timeout = self._poll_timeout if wait else self._timeout
        page = await self._get(self._feed_url, params, timeout)
        entries = page["revocations"]
        self.revocations.apply(entries)
        if entries:
            self._last = max(self._last, *(int(e["seq"]) for e in entries))
        REVOCATION_SYNCED.labels(self.name).set_to_current_time()
        REVOCATION_SEQUENCE.labels(self.name).set(self._last)
        return bool(page["more"])

    async def catch_up(self, sequence: int) -> None:
        """Apply the feed up to `sequence` (a change just made through this gateway)."""
        async with self._catch_up_lock:
            while self._last < sequence:
                if not await self._read_feed(0) and self._last < sequence:
                    return  # expired already, or taken back: nothing more to apply

    def apply_message(self, payload: bytes) -> None:
        """Apply revocations published on NATS."""
        try:
            entries = json.loads(payload)["entries"]
            self.revocations.apply(entries)
        except (ValueError, KeyError, TypeError) as exc:
            _log.warning("ignoring a malformed revocation message from %s: %s", self.name, exc)

    async def follow(self) -> None:
        """Load the keys and the whole feed, then follow the feed for as long as it runs."""
        while self._verifier is None:
            try:
                await self._load_keys()
            except _READ_ERRORS as exc:
                _log.warning("cannot read the keys of %s: %s", self.name, exc)
                await asyncio.sleep(_RETRY)
        while True:
            try:
                if not await self._read_feed(0):
                    self._synced.set()
                    # Held by the issuer until something is revoked.
                    await self._read_feed(_LONG_POLL)
            except _READ_ERRORS as exc:
                _log.warning("cannot read the revocations of %s: %s", self.name, exc)
                await asyncio.sleep(_RETRY)

    def note_use(self, use: TokenUse) -> None:
        """A token was let through: tell its issuer (a device checks in), once a minute."""
        now = time.monotonic()
        last = self._reported.get(use)
        if last is not None and now - last < _REPORT_EVERY:
            return
        self._reported[use] = now
        self._unreported.append(use)

    async def report_uses(self) -> None:
        """Send the tokens used to the issuer in batches, for as long as it runs."""
        while True:
            await asyncio.sleep(self._report_interval)
            horizon = time.monotonic() - _REPORT_EVERY
            self._reported = {u: t for u, t in self._reported.items() if t > horizon}
            batch, self._unreported = self._unreported[:_MAX_BATCH], self._unreported[_MAX_BATCH:]
            if not batch:
                continue
            body = {"tokens": [{"tenant_id": t, "sub": s, "jti": j} for t, s, j in batch]}
            try:
                async with self._session.post(
                    self._used_url, json=body, timeout=self._timeout
                ) as resp:
                    if resp.status != 204:
                        raise ValueError(f"{self._used_url} answered {resp.status}")
            except _READ_ERRORS as exc:
                # Not retried: the next use after a minute reports the token again.
                _log.warning("cannot report %d token uses to %s: %s", len(batch), self.name, exc)
                for use in batch:
                    self._reported.pop(use, None)

    async def wait_ready(self, within: float) -> bool:
        """Wait until the first full read is done (at most `within` seconds)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._synced.wait()
        return self.ready


# Where each issuer's internal API lives.
_PREFIXES: Final = {
    "deviceauth": "/api/internal/v1/devauth",
    "useradm": "/api/internal/v1/useradm",
}
_READ_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError, TypeError)
