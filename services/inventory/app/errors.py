"""Domain errors of the inventory, with their HTTP status and Mender's wording."""

from __future__ import annotations

from typing import Final

from common.core.errors import BadRequest, NotFound, PreconditionFailed

__all__ = [
    "DeviceNotFound",
    "ETagMismatch",
    "GroupNotFound",
    "ModifiedSince",
    "TooManyAttributes",
]

_DEVICE_NOT_FOUND: Final = "Device not found"
_GROUP_NOT_FOUND: Final = "group not found"
_TOO_MANY: Final = "the number of attributes in the scope is above the limit"
_ETAG: Final = "ETag does not match"
_MODIFIED: Final = "the device was modified after the If-Unmodified-Since time"


class DeviceNotFound(NotFound):
    """No such device in the tenant's inventory (404)."""

    def __init__(self, message: str = _DEVICE_NOT_FOUND) -> None:
        super().__init__(message)


class GroupNotFound(NotFound):
    """No device belongs to the group (404)."""

    def __init__(self, message: str = _GROUP_NOT_FOUND) -> None:
        super().__init__(message)


class TooManyAttributes(BadRequest):
    """A scope would hold more attributes than its limit (400)."""

    def __init__(self, message: str = _TOO_MANY) -> None:
        super().__init__(message)


class ETagMismatch(PreconditionFailed):
    """`If-Match` does not name the device's current tags ETag (412)."""

    def __init__(self, message: str = _ETAG) -> None:
        super().__init__(message)


class ModifiedSince(PreconditionFailed):
    """The device changed after the `If-Unmodified-Since` time (412)."""

    def __init__(self, message: str = _MODIFIED) -> None:
        super().__init__(message)
