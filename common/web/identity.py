"""Who is calling, as route dependencies: the identity in the request's bearer token.

The token is decoded by `common.core.claims`, which the use-cases may import without FastAPI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from common.core.claims import Identity, identity_from_token
from common.core.errors import Unauthorized

__all__ = [
    "DeviceIdentity",
    "OptionalIdentity",
    "UserIdentity",
    "bearer_token",
    "device_caller",
    "user_caller",
]


def bearer_token(request: HTTPConnection) -> str | None:
    """Return the bearer token of the request (or websocket handshake), if it has one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


# The dependencies are `async def` although they never wait: FastAPI runs a plain `def`
# dependency in a worker thread, and that hop cost more than the rest of an idle poll.


def _identity_of(request: HTTPConnection) -> Identity | None:
    token = bearer_token(request)
    return identity_from_token(token) if token else None


def _caller(request: HTTPConnection) -> Identity:
    identity = _identity_of(request)
    if identity is None:
        raise Unauthorized("Authorization not present in header")
    return identity


def device_caller(conn: HTTPConnection) -> Identity:
    """The calling device (for a websocket route, which answers a refusal itself)."""
    identity = _caller(conn)
    if not identity.is_device:
        raise Unauthorized("the token does not belong to a device")
    return identity


def user_caller(conn: HTTPConnection) -> Identity:
    """The calling user (for a websocket route, which answers a refusal itself)."""
    identity = _caller(conn)
    if not identity.is_user:
        raise Unauthorized("the token does not belong to a user")
    return identity


async def _optional_identity(request: HTTPConnection) -> Identity | None:
    return _identity_of(request)


async def _device_identity(request: HTTPConnection) -> Identity:
    return device_caller(request)


async def _user_identity(request: HTTPConnection) -> Identity:
    return user_caller(request)


DeviceIdentity = Annotated[Identity, Depends(_device_identity)]
UserIdentity = Annotated[Identity, Depends(_user_identity)]
OptionalIdentity = Annotated[Identity | None, Depends(_optional_identity)]
