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

from cryptography.hazmat.primitives.asymmetric import rsa

from common.core.tokens import SigningKey, TokenVerifier, VerifyingKey, load_signing_key

__all__ = ["KeyRing", "load_key_ring"]

_log = logging.getLogger("useradm.keys")
_KEY_FILE: Final = re.compile(r"private\.id\.[0-9]+\.pem$")
# `exp` is optional: tokens issued with `no_expiry` and personal access tokens created
# with `expires_in: 0` never expire.
_REQUIRED_CLAIMS: Final = ("sub", "jti", "iss")


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
        self._verifying = (
            signer.verifying(),
            *(k.verifying() for k in others),
            *((fallback.verifying(fallback=True),) if fallback is not None else ()),
        )
        self._verifier = TokenVerifier(self._verifying, require=_REQUIRED_CLAIMS)

    @property
    def signer(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._signer

    def verifying_keys(self) -> tuple[VerifyingKey, ...]:
        """The public keys that verify user tokens, the fallback marked as such."""
        return self._verifying

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Return a compact JWT of the claims, with the signer's `kid`."""
        return self._signer.sign(claims)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims; raise TokenExpired or TokenInvalid."""
        return self._verifier.verify(token)


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
