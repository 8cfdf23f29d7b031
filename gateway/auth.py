"""Token checks: every authenticated request is verified by the service that issued the token.

Device tokens are checked by deviceauth (`GET /api/internal/v1/devauth/tokens/verify`), user
tokens by useradm (`GET /api/internal/v1/useradm/auth/verify`), with the client's
Authorization and the `X-Forwarded-*` headers describing the request, as Traefik's forward
auth does for Mender. A 2xx lets the request through; any other answer (401, 403, 429 with
`Retry-After`, ...) goes back to the client as the verifier sent it.

To keep an HTTP round trip off the hot path, a positive answer is remembered per token
string for `min(ttl, exp - now)` seconds; negative answers are never remembered. Parallel
requests with a token that is being verified wait for that one verification.

Consistency window: a token revoked at its issuer without passing through this gateway
(another gateway replica, an internal call, a user removed) keeps working here for at most
`ttl` seconds (`GATEWAY_TOKEN_CACHE_TTL`, default 3 s). What this gateway proxies takes
effect at once: a logout drops its token, and any successful change to a device through
deviceauth's management API (accept, reject, decommission, auth set or token deletion)
drops every cached token of that device (or that one token); a verification already in
flight cannot re-add them. While a
token is cached, per-request checks the verifier would do (its rate limits, deviceauth's
check-in time) happen at most once per `ttl` for that token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.routes import AuthMode

__all__ = [
    "Denial",
    "Grant",
    "TokenCache",
    "TokenGate",
    "Verifier",
    "VerifierUnavailable",
    "revocation_keys",
    "token_expiry",
]

_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_TOKEN_LENGTH: Final = 8192

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Grant:
    """The token is good: proxy the request, adding these headers from the verifier."""

    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Denial:
    """The token is refused: answer the client with this status.

    `body` is the verifier's own answer to relay; when None the gateway renders its error
    body with `message`.
    """

    status: int
    message: str = ""
    body: bytes | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()


class VerifierUnavailable(Exception):
    """The verifier is not deployed (503) or could not be reached in time (502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Verifier(Protocol):
    """Asks a token's issuer whether the token is still good for a request."""

    async def verify(
        self, mode: AuthMode, token: str, forwarded: Sequence[tuple[str, str]]
    ) -> Grant | Denial:
        """Return the issuer's verdict; raise VerifierUnavailable when it cannot answer."""
        ...


def _b64_json(part: str) -> object:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def token_expiry(token: str) -> float | None:
    """The `exp` of a syntactically valid JWT (infinity without one), None when malformed.

    Tokens without `exp` are legitimate: useradm issues them for `no_expiry` logins and
    personal access tokens created with `expires_in: 0`.
    """
    if len(token) > _MAX_TOKEN_LENGTH or not _TOKEN_SHAPE.fullmatch(token):
        return None
    header, payload, _ = token.split(".")
    try:
        head = _b64_json(header)
        claims = _b64_json(payload)
    except (binascii.Error, ValueError):
        return None
    if not isinstance(head, dict) or not isinstance(claims, dict):
        return None
    if "exp" not in claims:
        return math.inf
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def revocation_keys(token: str) -> tuple[str, ...]:
    """The keys under which a token can be revoked as a group: its `sub` and its `jti`."""
    try:
        claims = _b64_json(token.split(".")[1])
    except (binascii.Error, ValueError, IndexError):
        return ()
    if not isinstance(claims, dict):
        return ()
    return tuple(
        f"{name}:{claims[name]}" for name in ("sub", "jti") if isinstance(claims.get(name), str)
    )


class TokenCache:
    """Positive verifications by token string, bounded (least recently used go first).

    Entries are also indexed by their token's subject and id, so that revoking a device (or
    one of its tokens) through this gateway drops every cached token it had at once.
    """

    def __init__(
        self,
        *,
        ttl: float,
        max_size: int,
        horizon: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl = ttl
        self._max_size = max_size
        # How long an ended session must block re-caching: the longest a verification that
        # started before the logout can take to come back.
        self._horizon = horizon
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[str, tuple[float, Grant, tuple[str, ...]]] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}
        # Tokens, and revocation keys, ended recently → when (see `end`).
        self._ended: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Grant | None:
        """The cached grant of a token, if it has not expired."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._drop(token)
            return None
        self._entries.move_to_end(token)
        return entry[1]

    def _drop(self, token: str) -> None:
        entry = self._entries.pop(token, None)
        if entry is None:
            return
        for key in entry[2]:
            tokens = self._by_key.get(key)
            if tokens is not None:
                tokens.discard(token)
                if not tokens:
                    del self._by_key[key]

    def put(self, token: str, grant: Grant, *, exp: float, started: float) -> None:
        """Remember a grant obtained by a verification that started at `started`."""
        if self._ttl <= 0:
            return
        keys = revocation_keys(token)
        for name in (token, *keys):
            ended = self._ended.get(name)
            if ended is not None and ended >= started:
                return
        now = self._clock()
        lifetime = min(self._ttl, exp - self._wall_clock())
        if lifetime <= 0:
            return
        self._drop(token)
        self._entries[token] = (now + lifetime, grant, keys)
        for key in keys:
            self._by_key.setdefault(key, set()).add(token)
        while len(self._entries) > self._max_size:
            self._drop(next(iter(self._entries)))

    def end_session(self, token: str) -> None:
        """Forget a token now and refuse grants of verifications already in flight."""
        self._drop(token)
        self._end(token)

    def revoke(self, key: str) -> None:
        """Forget every token with this revocation key (`sub:<id>` or `jti:<id>`) now."""
        for token in list(self._by_key.get(key, ())):
            self._drop(token)
        self._end(key)

    def _end(self, name: str) -> None:
        now = self._clock()
        self._ended[name] = now
        self._ended.move_to_end(name)
        limit = now - self._horizon
        while self._ended:
            oldest, when = next(iter(self._ended.items()))
            if when >= limit and len(self._ended) <= self._max_size:
                break
            del self._ended[oldest]

    def now(self) -> float:
        """The cache's clock, for stamping when a verification starts."""
        return self._clock()


class TokenGate:
    """Checks tokens: local shape check, then the cache, then the verifier."""

    def __init__(
        self,
        verifier: Verifier,
        *,
        ttl: float,
        max_size: int,
        horizon: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._caches = {
            mode: TokenCache(
                ttl=ttl, max_size=max_size, horizon=horizon, clock=clock, wall_clock=wall_clock
            )
            for mode in (AuthMode.DEVICE, AuthMode.USER)
        }
        self._inflight: dict[AuthMode, dict[str, asyncio.Future[Grant | Denial]]] = {
            AuthMode.DEVICE: {},
            AuthMode.USER: {},
        }

    def cache(self, mode: AuthMode) -> TokenCache:
        """The cache of one auth mode (device or user tokens)."""
        return self._caches[mode]

    def cached(self, mode: AuthMode, token: str) -> Grant | None:
        """The remembered grant of a token, if any: the hot path, no I/O."""
        return self._caches[mode].get(token) if token else None

    async def check(
        self, mode: AuthMode, token: str, forwarded: Sequence[tuple[str, str]]
    ) -> Grant | Denial:
        """Decide whether `token` may make the request described by `forwarded`."""
        if not token:
            return Denial(401, "Authorization not present in header")
        cache = self._caches[mode]
        grant = cache.get(token)
        if grant is not None:
            return grant
        exp = token_expiry(token)
        if exp is None:
            return Denial(401, "malformed token")
        inflight = self._inflight[mode]
        pending = inflight.get(token)
        if pending is not None:
            # Requests with the same token arriving while it is being verified (every
            # parallel request of a client when its cache entry expires) share that answer
            # when it is a grant; a refusal may depend on the request, so they then ask
            # for themselves.
            try:
                shared = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise
            else:
                if isinstance(shared, Grant):
                    return shared
            return await self._ask(mode, token, forwarded, exp)
        future: asyncio.Future[Grant | Denial] = asyncio.get_running_loop().create_future()
        inflight[token] = future
        try:
            verdict = await self._ask(mode, token, forwarded, exp)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiting requests get it too
            raise
        else:
            future.set_result(verdict)
            return verdict
        finally:
            del inflight[token]

    async def _ask(
        self, mode: AuthMode, token: str, forwarded: Sequence[tuple[str, str]], exp: float
    ) -> Grant | Denial:
        cache = self._caches[mode]
        started = cache.now()
        verdict = await self._verifier.verify(mode, token, forwarded)
        if isinstance(verdict, Grant):
            cache.put(token, verdict, exp=exp, started=started)
        return verdict

    def end_session(self, token: str) -> None:
        """The token was logged out through this gateway: stop accepting it from the cache."""
        for cache in self._caches.values():
            cache.end_session(token)

    def revoke_device(self, key: str) -> None:
        """A device (`sub:<id>`) or device token (`jti:<id>`) was changed through this gateway."""
        self._caches[AuthMode.DEVICE].revoke(key)
