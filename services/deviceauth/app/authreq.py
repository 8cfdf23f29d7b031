"""The device's authentication request: the signed JSON body, parsed and normalized."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from common.core.errors import BadRequest
from services.deviceauth.app.iddata import (
    IdentityDataError,
    canonical_identity_text,
    identity_key,
)
from services.deviceauth.app.keys import DevicePublicKey, PublicKeyError, parse_public_key

__all__ = ["AuthRequest", "parse_auth_request"]


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """A validated auth request: canonical identity, its key, and the normalized PEM."""

    id_data: str
    id_data_sha256: str
    pubkey: str
    key: DevicePublicKey
    tenant_token: str


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"invalid JSON literal {name}")


def _string_field(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"failed to decode auth request: {name} must be a string")
    return value


def parse_auth_request(body: bytes) -> AuthRequest:
    """Parse and validate the raw body of an auth request (400 on any defect)."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"failed to decode auth request: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("failed to decode auth request: the body must be a JSON object")
    id_data = _string_field(doc, "id_data")
    pubkey = _string_field(doc, "pubkey")
    tenant_token = _string_field(doc, "tenant_token")
    if not id_data:
        raise BadRequest("invalid auth request: id_data must be provided")
    if not pubkey:
        raise BadRequest("invalid auth request: pubkey must be provided")
    try:
        key, normalized = parse_public_key(pubkey)
    except PublicKeyError as exc:
        raise BadRequest(f"invalid auth request: {exc}") from None
    try:
        canonical = canonical_identity_text(id_data)
    except IdentityDataError as exc:
        raise BadRequest(f"invalid auth request: {exc}") from None
    return AuthRequest(
        id_data=canonical,
        id_data_sha256=identity_key(canonical),
        pubkey=normalized,
        key=key,
        tenant_token=tenant_token,
    )
