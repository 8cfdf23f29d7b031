"""Secrets at rest: AES-256-GCM, bound to the document that holds them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.core.errors import InternalError

__all__ = ["SecretBox", "SecretUnreadable"]

_ALGORITHM: Final = "AES_256_GCM"
_NONCE: Final = 12


class SecretUnreadable(InternalError):
    """A stored secret cannot be decrypted with the configured keys (500)."""


class SecretBox:
    """Encrypts secrets with the current key; decrypts with it or the fallback key.

    The associated data (`context`, e.g. the owning document) makes a ciphertext useless
    anywhere else: copied into another tenant's document, it does not decrypt.
    """

    def __init__(self, key: bytes, fallback: bytes | None = None) -> None:
        self._keys = [AESGCM(key)] + ([AESGCM(fallback)] if fallback else [])

    def seal(self, plaintext: str, *, context: str) -> dict[str, Any]:
        """The stored form of a secret."""
        nonce = os.urandom(_NONCE)
        data = self._keys[0].encrypt(nonce, plaintext.encode(), context.encode())
        return {"algorithm": _ALGORITHM, "data": nonce + data}

    def open(self, sealed: Mapping[str, Any], *, context: str) -> str:
        """The secret in a stored form (SecretUnreadable when no key opens it)."""
        if sealed.get("algorithm") != _ALGORITHM:
            raise SecretUnreadable(f"unknown algorithm {sealed.get('algorithm')!r}")
        data = bytes(sealed["data"])
        for key in self._keys:
            try:
                return key.decrypt(data[:_NONCE], data[_NONCE:], context.encode()).decode()
            except InvalidTag:
                continue
        raise SecretUnreadable("no configured key decrypts the stored secret")
