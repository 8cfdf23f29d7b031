"""The keys that sign user tokens and the verification bound to them.

Each key is bound to the algorithm its type implies (RSA → RS256, Ed25519 → EdDSA), so a
token is never checked with an algorithm its header picks: `alg: none` and HS256 signed
with the public key are refused. Tokens name their key with an integer `kid`; a token
whose `kid` matches no loaded key is refused before any signature check.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from common.tokens import SigningKey, TokenExpired, TokenInvalid, load_signing_key

__all__ = ["KeyRing", "load_key_ring"]

_log = logging.getLogger("useradm.keys")
_KEY_FILE: Final = re.compile(r"private\.id\.[0-9]+\.pem$")
# A token this long is not one of ours; do not spend time parsing it.
_MAX_TOKEN_LENGTH: Final = 8192
# `exp` is optional: tokens issued with `no_expiry` and personal access tokens created
# with `expires_in: 0` never expire.
_REQUIRED_CLAIMS: Final = ["sub", "jti", "iss"]


class _JWS(jwt.PyJWS):
    # NOTE: Mender's user tokens carry an integer `kid`; PyJWT insists on a string.
    def _validate_kid(self, kid: Any) -> None:
        if isinstance(kid, bool) or not isinstance(kid, str | int):
            raise jwt.InvalidTokenError("Key ID header parameter must be a string or integer")


class _JWT(jwt.PyJWT):
    def __init__(self) -> None:
        super().__init__()
        self._jws = _JWS(options=self._get_sig_options())


_jws: Final = _JWS()
_jwt: Final = _JWT()


class KeyRing:
    """Signs with the current key; verifies with the key a token names (or the fallback)."""

    def __init__(
        self,
        signer: SigningKey,
        *,
        others: Iterable[SigningKey] = (),
        fallback: SigningKey | None = None,
    ) -> None:
        self._signer = signer
        self._by_kid: dict[int, SigningKey] = {}
        for key in (*others, signer):
            self._by_kid[key.kid or 0] = key
        # A fallback key also answers for its own key id, unless a current key has it.
        if fallback is not None:
            self._by_kid.setdefault(fallback.kid or 0, fallback)
        self._fallback = fallback

    @property
    def signer(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._signer

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Return a compact JWT of the claims, with the signer's `kid`."""
        return self._signer.sign(claims)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims; raise TokenExpired or TokenInvalid."""
        if len(token) > _MAX_TOKEN_LENGTH:
            raise TokenInvalid("token is too long")
        try:
            header = _jws.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from exc
        kid = header.get("kid", 0)
        if isinstance(kid, bool) or not isinstance(kid, int):
            raise TokenInvalid("unknown key id")
        key = self._by_kid.get(kid)
        if key is None:
            raise TokenInvalid("unknown key id")
        candidates = [key]
        if self._fallback is not None and self._fallback is not key:
            candidates.append(self._fallback)
        expired = False
        for candidate in candidates:
            if header.get("alg") != candidate.algorithm:
                continue
            try:
                claims: dict[str, Any] = _jwt.decode(
                    token,
                    candidate.public_key,
                    algorithms=[candidate.algorithm],
                    options={"require": _REQUIRED_CLAIMS, "verify_aud": False},
                )
            except jwt.ExpiredSignatureError:
                expired = True
                continue
            except jwt.PyJWTError:
                continue
            return claims
        if expired:
            raise TokenExpired("token has expired")
        raise TokenInvalid("token signature is invalid")


def _rotated_keys(primary: Path) -> list[SigningKey]:
    """Other `private.id.<N>.pem` keys beside a primary key named that way."""
    if not _KEY_FILE.search(primary.name):
        return []
    found = []
    for path in sorted(primary.parent.glob("private.id.*.pem")):
        if path.name != primary.name and _KEY_FILE.search(path.name):
            found.append(load_signing_key(path, with_kid=True))
    return found


def load_key_ring(primary: Path | None, *, fallback: Path | None = None) -> KeyRing:
    """Load the signing key (a temporary one when `primary` is None) and its companions."""
    if primary is None:
        _log.warning("no server_priv_key_path: user tokens are signed with a temporary key")
        signer = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid=0)
        others: list[SigningKey] = []
    else:
        signer = load_signing_key(primary, with_kid=True)
        others = _rotated_keys(primary)
    backup = load_signing_key(fallback, with_kid=True) if fallback is not None else None
    return KeyRing(signer, others=others, fallback=backup)
