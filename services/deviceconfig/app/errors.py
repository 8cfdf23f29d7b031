"""Domain errors of deviceconfig, with their HTTP status and Mender's wording."""

from __future__ import annotations

from typing import Final

from common.core.errors import BadRequest, Conflict, Forbidden, NotFound

__all__ = [
    "DeviceExists",
    "DeviceNotFound",
    "InvalidBody",
    "UpdateControlMapForbidden",
]

_DEVICE_NOT_FOUND: Final = "device does not exist"
_DEVICE_EXISTS: Final = "device already exists"
_UPDATE_CONTROL_MAP: Final = (
    "forbidden: update control map is available only for Enterprise customers"
)


class DeviceNotFound(NotFound):
    """deviceconfig has no such device (404)."""

    def __init__(self, message: str = _DEVICE_NOT_FOUND) -> None:
        super().__init__(message)


class DeviceExists(Conflict):
    """The device is already recorded (409)."""

    def __init__(self, message: str = _DEVICE_EXISTS) -> None:
        super().__init__(message)


class InvalidBody(BadRequest):
    """The request body breaks a rule: a blank id, a limit on configuration keys or values (400)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"invalid request body: {problem}")


class UpdateControlMapForbidden(Forbidden):
    """Update control maps are an Enterprise feature in Mender (403)."""

    def __init__(self, message: str = _UPDATE_CONTROL_MAP) -> None:
        super().__init__(message)
