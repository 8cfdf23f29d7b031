"""Domain errors of deviceauth, with their HTTP status and Mender's message text."""

from __future__ import annotations

from common.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    UnprocessableEntity,
)
from services.deviceauth.models import Device

__all__ = [
    "AuthSetNotFound",
    "BadStatusTransition",
    "DeviceExists",
    "DeviceLimitReached",
    "DeviceNotFound",
    "DeviceUnauthorized",
    "TokenExpiredError",
    "TokenInvalidError",
    "TokenNotFound",
    "UnsupportedLimit",
]


class DeviceNotFound(NotFound):
    """No such device in the caller's tenant."""

    def __init__(self) -> None:
        super().__init__("device not found")


class AuthSetNotFound(NotFound):
    """No such authentication set on the device."""

    def __init__(self) -> None:
        super().__init__("authorization set not found")


class TokenNotFound(NotFound):
    """No such token."""

    def __init__(self) -> None:
        super().__init__("token not found")


class DeviceUnauthorized(Unauthorized):
    """The device may not have a token (pending, rejected, over the limit)."""

    def __init__(self, message: str = "dev auth: unauthorized") -> None:
        super().__init__(message)


class BadStatusTransition(BadRequest):
    """The auth set cannot move to the requested status from its current one."""

    def __init__(self) -> None:
        super().__init__("dev auth: bad request")


class DeviceLimitReached(UnprocessableEntity):
    """Accepting the device would exceed the tenant's device limit."""

    def __init__(self) -> None:
        super().__init__("maximum number of accepted devices reached")


class DeviceExists(Conflict):
    """Preauthorization of an identity that already has a device."""

    def __init__(self, device: Device) -> None:
        super().__init__("device already exists")
        self.device = device


class UnsupportedLimit(BadRequest):
    """A limit name deviceauth does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unsupported limit {name}")


class TokenInvalidError(Unauthorized):
    """The token is forged, malformed, revoked or its device is no longer accepted."""

    def __init__(self, message: str = "token invalid") -> None:
        super().__init__(message)


class TokenExpiredError(Forbidden):
    """The token's signature is good but it has expired."""

    def __init__(self) -> None:
        super().__init__("token expired")
