"""Device public keys: parsing, normalizing and checking auth-request signatures."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

__all__ = [
    "DevicePublicKey",
    "PublicKeyError",
    "SignatureError",
    "parse_public_key",
    "verify_signature",
]

DevicePublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_PEM_BLOCK: Final = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_CURVES: Final = (ec.SECP224R1, ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class PublicKeyError(ValueError):
    """The public key is not a PEM SubjectPublicKeyInfo of a supported type."""


class SignatureError(ValueError):
    """The signature does not match the request body."""


def parse_public_key(pem: str) -> tuple[DevicePublicKey, str]:
    """Parse a PEM `PUBLIC KEY`; return the key and its normalized PEM text."""
    match = _PEM_BLOCK.search(pem)
    if match is None or match.group(1) != "PUBLIC KEY":
        raise PublicKeyError("cannot decode public key")
    try:
        key = serialization.load_pem_public_key(match.group(0).encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise PublicKeyError("cannot decode public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise PublicKeyError(f"unsupported elliptic curve {key.curve.name}")
    elif not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise PublicKeyError("unsupported public key type")
    normalized = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return key, normalized


def verify_signature(key: DevicePublicKey, signature: str, body: bytes) -> None:
    """Check a base64 signature of the raw body; raise SignatureError when it fails.

    RSA: PKCS#1 v1.5 over SHA-256; ECDSA: ASN.1 DER (r, s) over SHA-256; Ed25519: the
    plain signature of the body (no prehash).
    """
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not valid base64") from None
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, body, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(raw, body)
    except (InvalidSignature, ValueError):
        raise SignatureError("signature verification failed") from None
