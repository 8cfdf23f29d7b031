"""Token claims: who a bearer token names, decoded without verification or web framework.

The gateway verifies every token before a request reaches a service; services only decode
the claims (as Mender's services do) and never listen outside the internal network.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from common.core.errors import Unauthorized

__all__ = ["Identity", "decode_claims", "identity_from_token"]


@dataclass(frozen=True, slots=True)
class Identity:
    """The subject of a token: a device or a user, within a tenant."""

    subject: str
    tenant: str
    is_device: bool
    is_user: bool
    token: str
    claims: dict[str, Any]


def decode_claims(token: str) -> dict[str, Any]:
    """Return the payload of a JWT without checking its signature."""
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthorized("malformed token")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError) as exc:
        raise Unauthorized("malformed token") from exc
    if not isinstance(claims, dict):
        raise Unauthorized("malformed token")
    return claims


def identity_from_token(token: str) -> Identity:
    """Build the caller's identity from a bearer token's claims."""
    claims = decode_claims(token)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("malformed token: missing subject")
    tenant = claims.get("mender.tenant", "")
    return Identity(
        subject=subject,
        tenant=tenant if isinstance(tenant, str) else "",
        is_device=claims.get("mender.device") is True,
        is_user=claims.get("mender.user") is True,
        token=token,
        claims=claims,
    )
