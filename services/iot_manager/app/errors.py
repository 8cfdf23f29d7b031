"""Domain errors of iot-manager, with their HTTP status and Mender's wording."""

from __future__ import annotations

from typing import Final

from common.core.errors import BadGateway, BadRequest, Conflict, NotFound

__all__ = [
    "CloudFailure",
    "DeviceNotFound",
    "DeviceStateConflict",
    "IntegrationExists",
    "IntegrationInUse",
    "IntegrationNotFound",
    "InvalidCredentials",
]

_INTEGRATION_NOT_FOUND: Final = "integration not found"
_INTEGRATION_EXISTS: Final = "integration already exists"
_IN_USE: Final = "cannot remove integration in use by devices"
_DEVICE_NOT_FOUND: Final = "device not found"
_STATE_CONFLICT: Final = "conflict when updating the device state"


class IntegrationNotFound(NotFound):
    """No such integration for the tenant (or the device has not got it) (404)."""

    def __init__(self, message: str = _INTEGRATION_NOT_FOUND) -> None:
        super().__init__(message)


class IntegrationExists(Conflict):
    """The tenant already has an integration: Mender allows one (409)."""

    def __init__(self, message: str = _INTEGRATION_EXISTS) -> None:
        super().__init__(message)


class IntegrationInUse(Conflict):
    """A cloud integration still has devices (409)."""

    def __init__(self, message: str = _IN_USE) -> None:
        super().__init__(message)


class DeviceNotFound(NotFound):
    """No integration knows the device (404)."""

    def __init__(self, message: str = _DEVICE_NOT_FOUND) -> None:
        super().__init__(message)


class DeviceStateConflict(Conflict):
    """The device's state changed in the cloud meanwhile (409)."""

    def __init__(self, message: str = _STATE_CONFLICT) -> None:
        super().__init__(message)


class InvalidCredentials(BadRequest):
    """Credentials that cannot work: wrong kind, or a target that may not be called (400)."""


class CloudFailure(BadGateway):
    """A cloud API failed (502)."""
