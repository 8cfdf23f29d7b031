"""Who is calling: the claims of the bearer token, decoded without verification.

The gateway verifies every token before a request reaches a service; services only decode
the claims (as Mender's services do) and never listen outside the internal network.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from common.errors import Unauthorized

__all__ = [
    "DeviceIdentity",
    "Identity",
    "OptionalIdentity",
    "UserIdentity",
    "bearer_token",
    "decode_claims",
    "device_identity",
    "identity_from_token",
    "user_identity",
]


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


def bearer_token(request: HTTPConnection) -> str | None:
    """Return the bearer token of the request (or websocket handshake), if it has one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _optional_identity(request: HTTPConnection) -> Identity | None:
    token = bearer_token(request)
    return identity_from_token(token) if token else None


def _any_identity(request: HTTPConnection) -> Identity:
    identity = _optional_identity(request)
    if identity is None:
        raise Unauthorized("Authorization not present in header")
    return identity


def device_identity(request: HTTPConnection) -> Identity:
    """The calling device (Unauthorized when the token is missing or not a device's)."""
    identity = _any_identity(request)
    if not identity.is_device:
        raise Unauthorized("the token does not belong to a device")
    return identity


def user_identity(request: HTTPConnection) -> Identity:
    """The calling user (Unauthorized when the token is missing or not a user's)."""
    identity = _any_identity(request)
    if not identity.is_user:
        raise Unauthorized("the token does not belong to a user")
    return identity


DeviceIdentity = Annotated[Identity, Depends(device_identity)]
UserIdentity = Annotated[Identity, Depends(user_identity)]
OptionalIdentity = Annotated[Identity | None, Depends(_optional_identity)]
