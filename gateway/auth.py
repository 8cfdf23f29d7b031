"""Token checks, done by the gateway itself: no round trip, no database.

A device token is checked as deviceauth would, a user token (login or personal access
token) as useradm would, with the same statuses and messages:

- signature, with the issuer's public keys (`gateway.issuers`); each key is bound to its
  algorithm, so `alg: none` and HS256 signed with a public key are refused, and a token
  signed by the other issuer's key is not one of this issuer's;
- expiry: an expired device token is 403 `token expired` (as Mender's deviceauth answers),
  an expired user token 401;
- the kind of token: a user token on a device route is `not a device token`; a device token
  on a management route is `unauthorized`; a user token must have the `mender.*` scope;
- revocation: the issuer's revocations (token revoked or deleted, device rejected, dismissed
  or decommissioned, user logged out or removed, personal access token deleted, all tokens
  of a tenant) refuse the tokens issued before them.

A signature is checked once per token: the result is remembered (least recently used go
first) until the token expires; expiry and revocation are checked on every request.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from common.core.revocations import tenant_key, token_key
from common.core.tokens import TokenExpired, TokenInvalid
from gateway.issuers import Issuer, IssuerUnavailable, TokenUse
from gateway.metrics import token_cache, token_checks
from gateway.routes import AuthMode

__all__ = ["DEVICE_CLAIMS", "USER_CLAIMS", "Denial", "TokenGate"]

_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_TOKEN_LENGTH: Final = 8192
# Claims each issuer's tokens always carry (user tokens may have no `exp`).
DEVICE_CLAIMS: Final = ("exp", "sub", "jti")
USER_CLAIMS: Final = ("sub", "jti", "iss")
_SCOPE_ALL: Final = "mender.*"


@dataclass(frozen=True, slots=True)
class Denial:
    """The token is refused: answer the client with this status and message.

    `reason` names the refusal in the gateway's metrics; clients never see it.
    """

    status: int
    message: str
    reason: str = field(default="unavailable", compare=False)


# The answers, as deviceauth and useradm give them.
_MISSING: Final = Denial(401, "Authorization not present in header", "missing")
_MALFORMED: Final = Denial(401, "malformed token", "malformed")
_DEVICE_INVALID: Final = Denial(401, "token invalid", "invalid")
_DEVICE_REVOKED: Final = Denial(401, "token invalid", "revoked")
_DEVICE_EXPIRED: Final = Denial(403, "token expired", "expired")
_NOT_A_DEVICE: Final = Denial(401, "not a device token", "wrong_kind")
_USER_INVALID: Final = Denial(401, "invalid jwt", "invalid")
_USER_EXPIRED: Final = Denial(401, "token expired", "expired")
_USER_UNAUTHORIZED: Final = Denial(401, "unauthorized", "unauthorized")
_USER_REVOKED: Final = Denial(401, "unauthorized", "revoked")
_USER_SCOPE: Final = Denial(
    403, "forbidden: the token's scope does not allow this request", "scope"
)


def _b64_json(part: str) -> object:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _unverified_claims(token: str) -> dict[str, Any] | None:
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
    return claims


@dataclass(frozen=True, slots=True)
class _Checked:
    """A token whose signature and kind were found good: what is left to check per request."""

    expires: float
    issued_at: int
    keys: tuple[str, ...]
    use: TokenUse


class TokenGate:
    """Checks device and user tokens against their issuers' keys and revocations."""

    def __init__(
        self,
        issuers: Mapping[AuthMode, Issuer],
        *,
        max_size: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = dict(issuers)
        self._max_size = max_size
        self._wall_clock = wall_clock
        self._checked: dict[AuthMode, OrderedDict[str, _Checked]] = {
            AuthMode.DEVICE: OrderedDict(),
            AuthMode.USER: OrderedDict(),
        }
        # The series counted on every request, looked up once.
        self._hits = {mode: token_cache(mode.value, "hit") for mode in self._checked}
        self._misses = {mode: token_cache(mode.value, "miss") for mode in self._checked}
        self._accepted = {mode: token_checks(mode.value, "accepted") for mode in self._checked}

    @property
    def remembered(self) -> int:
        """How many tokens' signatures are remembered."""
        return sum(len(cache) for cache in self._checked.values())

    async def check(self, mode: AuthMode, token: str) -> Denial | None:
        """Why `token` may not make a request of `mode`, or None when it may."""
        try:
            denial = await self._check(mode, token)
        except IssuerUnavailable:
            token_checks(mode.value, "unavailable").inc()
            raise
        if denial is None:
            self._accepted[mode].inc()
        else:
            token_checks(mode.value, denial.reason).inc()
        return denial

    async def _check(self, mode: AuthMode, token: str) -> Denial | None:
        if not token:
            return _MISSING
        cache = self._checked[mode]
        checked = cache.get(token)
        if checked is None:
            self._misses[mode].inc()
            verdict = await self._verify(mode, token)
            if isinstance(verdict, Denial):
                return verdict
            checked = verdict
            self._remember(mode, token, checked)
        else:
            self._hits[mode].inc()
            cache.move_to_end(token)
        device = mode is AuthMode.DEVICE
        if checked.expires <= self._wall_clock():
            cache.pop(token, None)
            return _DEVICE_EXPIRED if device else _USER_EXPIRED
        issuer = self._issuers[mode]
        if issuer.revocations.refuses(checked.keys, checked.issued_at):
            return _DEVICE_REVOKED if device else _USER_REVOKED
        issuer.note_use(checked.use)
        return None

    def _remember(self, mode: AuthMode, token: str, checked: _Checked) -> None:
        cache = self._checked[mode]
        cache[token] = checked
        while len(cache) > self._max_size:
            cache.popitem(last=False)

    async def _verify(self, mode: AuthMode, token: str) -> _Checked | Denial:
        unverified = _unverified_claims(token)
        if unverified is None:
            return _MALFORMED
        issuer = self._issuers.get(mode)
        if issuer is None:
            raise IssuerUnavailable(_ISSUER_NAMES[mode])
        if mode is AuthMode.DEVICE:
            return await self._verify_device(issuer, token, unverified)
        return await self._verify_user(issuer, token)

    async def _verify_device(
        self, issuer: Issuer, token: str, unverified: dict[str, Any]
    ) -> _Checked | Denial:
        if unverified.get("mender.device") is not True:
            return _NOT_A_DEVICE
        try:
            claims = await issuer.verify(token)
        except TokenExpired:
            return _DEVICE_EXPIRED
        except TokenInvalid:
            return _DEVICE_INVALID
        return _checked(claims) or _DEVICE_INVALID

    async def _verify_user(self, issuer: Issuer, token: str) -> _Checked | Denial:
        try:
            claims = await issuer.verify(token)
        except TokenExpired:
            return _USER_EXPIRED
        except TokenInvalid:
            return _USER_INVALID
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
            return _USER_INVALID
        if not isinstance(claims.get("mender.tenant", ""), str):
            return _USER_UNAUTHORIZED
        if claims.get("mender.user") is not True:
            return _USER_UNAUTHORIZED
        if claims.get("scp") != _SCOPE_ALL:
            return _USER_SCOPE
        return _checked(claims) or _USER_INVALID


def _checked(claims: dict[str, Any]) -> _Checked | None:
    """What a verified token leaves to check per request; None when its claims are unusable."""
    token_id, subject, tenant, issued, exp = (
        claims.get("jti"),
        claims.get("sub"),
        claims.get("mender.tenant", ""),
        claims.get("iat", 0),
        claims.get("exp", math.inf),
    )
    if not isinstance(token_id, str) or not isinstance(subject, str):
        return None
    if not isinstance(tenant, str) or isinstance(issued, bool) or not isinstance(issued, int):
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    keys = (token_key(token_id), tenant_key(tenant))
    return _Checked(float(exp), issued, keys, (tenant, subject, token_id))


_ISSUER_NAMES: Final = {AuthMode.DEVICE: "deviceauth", AuthMode.USER: "useradm"}
