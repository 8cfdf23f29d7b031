"""JWT issuing and verification with RS256 (RSA) or EdDSA (Ed25519) keys from PEM files."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = [
    "SigningKey",
    "TokenExpired",
    "TokenInvalid",
    "TokenVerifier",
    "generate_key_file",
    "load_signing_key",
    "write_secret_file",
]

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_KID_FROM_NAME: Final = re.compile(r"private\.id\.([0-9]+)\.pem$")
# A token this long is not one of ours; do not spend time parsing it.
_MAX_TOKEN_LENGTH: Final = 8192


class _JWS(jwt.PyJWS):
    # NOTE: Mender's user tokens carry an integer `kid`; PyJWT insists on a string.
    def _validate_kid(self, kid: Any) -> None:
        if not isinstance(kid, str | int) or isinstance(kid, bool):
            raise jwt.InvalidTokenError("Key ID header parameter must be a string or integer")


class _JWT(jwt.PyJWT):
    def __init__(self) -> None:
        super().__init__()
        self._jws = _JWS(options=self._get_sig_options())


_jws: Final = _JWS()
_jwt: Final = _JWT()


class TokenInvalid(Exception):
    """The token is malformed, forged, or signed with an unknown key or algorithm."""


class TokenExpired(TokenInvalid):
    """The token's signature is valid but its `exp` has passed."""


@dataclass(frozen=True)
class SigningKey:
    """A private key with the algorithm and key id it signs with."""

    private_key: PrivateKey
    kid: int | None = None
    algorithm: str = field(init=False)

    def __post_init__(self) -> None:
        alg = "RS256" if isinstance(self.private_key, rsa.RSAPrivateKey) else "EdDSA"
        object.__setattr__(self, "algorithm", alg)

    @property
    def public_key(self) -> PublicKey:
        """The matching public key."""
        return self.private_key.public_key()

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Return a compact JWT of the claims."""
        headers = {"kid": self.kid} if self.kid is not None else None
        return _jwt.encode(
            dict(claims), self.private_key, algorithm=self.algorithm, headers=headers
        )


def load_signing_key(path: Path, *, with_kid: bool = False) -> SigningKey:
    """Load an RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8) private key from a PEM file.

    With `with_kid`, the key id is taken from a `private.id.<N>.pem` file name (else 0).
    """
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: only RSA and Ed25519 keys are supported")
    kid = None
    if with_kid:
        match = _KID_FROM_NAME.search(path.name)
        kid = int(match.group(1)) if match else 0
    return SigningKey(key, kid=kid)


def generate_key_file(path: Path, kind: str = "rsa") -> None:
    """Write a new private key (PKCS#8 PEM, mode 0600) unless the file already exists."""
    if path.exists():
        return
    key: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret_file(path, pem)


def write_secret_file(path: Path, content: bytes, *, replace: bool = False) -> None:
    """Create `path` (mode 0600) holding `content`, whole or not at all; an existing file wins
    unless `replace` (for a file derived from others, rewritten when they change).

    The content is written and synced under a temporary name, then linked (or renamed) into
    place: a crash at any point leaves the old file or the complete new one, never an empty
    key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temporary, path)
            return
        try:
            os.link(temporary, path)
        except FileExistsError:
            return
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class TokenVerifier:
    """Verifies tokens against a set of public keys, each bound to its own algorithm.

    Binding the algorithm to the key is what refuses `alg: none` and the HS256-with-the-
    public-key trick: a token is only checked with the algorithm its key was made for.
    A token naming a key id is checked with the keys of that id (an absent id means 0, as
    Mender's useradm does) and with keys loaded without one; `fallback` keys (rotation)
    are always tried last.
    """

    def __init__(
        self,
        keys: Iterable[SigningKey],
        *,
        fallback: Iterable[SigningKey] = (),
        issuer: str | None = None,
        require: Sequence[str] = ("exp", "sub", "jti"),
    ) -> None:
        self._keys = list(keys)
        self._fallback = [k for k in fallback if k not in self._keys]
        if not self._keys:
            raise ValueError("at least one key is needed")
        self._issuer = issuer
        self._require = list(require)

    def _candidates(self, kid: Any) -> list[SigningKey]:
        wanted = 0 if kid is None else kid
        named = [k for k in self._keys + self._fallback if k.kid is None or k.kid == wanted]
        if not named:
            raise TokenInvalid("unknown key id")
        return named + [k for k in self._fallback if k not in named]

    def verify(self, token: str, *, leeway: float = 0) -> dict[str, Any]:
        """Return the verified claims; raise TokenExpired or TokenInvalid."""
        if len(token) > _MAX_TOKEN_LENGTH:
            raise TokenInvalid("token is too long")
        try:
            header = _jws.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from exc
        expired = False
        for key in self._candidates(header.get("kid")):
            if header.get("alg") != key.algorithm:
                continue
            try:
                claims: dict[str, Any] = _jwt.decode(
                    token,
                    key.public_key,
                    algorithms=[key.algorithm],
                    issuer=self._issuer,
                    leeway=leeway,
                    options={"require": self._require, "verify_aud": False},
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
