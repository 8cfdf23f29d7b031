"""deviceconnect's domain errors, with Mender's status codes and messages."""

from __future__ import annotations

from common.core.errors import (
    BadGateway,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
)

__all__ = [
    "DeviceNotConnected",
    "DeviceNotFound",
    "FileTooLarge",
    "FileTransferDisabled",
    "FileTransferFailed",
    "FileTransferTimeout",
    "SessionNotFound",
    "ShuttingDown",
    "TransferDeviceGone",
]


class DeviceNotFound(NotFound):
    """The device is unknown to deviceconnect (404)."""

    def __init__(self) -> None:
        super().__init__("device not found")


class DeviceNotConnected(NotFound):
    """The device holds no connection (404; file transfers answer 409)."""

    def __init__(self, message: str = "device not connected") -> None:
        super().__init__(message)


class TransferDeviceGone(Conflict):
    """A file transfer found the device disconnected (409, as mender-cli expects)."""

    def __init__(self) -> None:
        super().__init__("device disconnected")


class SessionNotFound(NotFound):
    """No recorded session with that id in the caller's tenant (404)."""

    def __init__(self) -> None:
        super().__init__("session not found")


class FileTransferTimeout(ServiceError):
    """The device did not answer in time (408)."""

    status_code = 408

    def __init__(self) -> None:
        super().__init__("file transfer timed out")


class FileTransferFailed(BadRequest):
    """The device refused or failed the transfer (400, the device's message)."""


class FileTransferDisabled(BadGateway):
    """The device does not accept file transfers (502)."""

    def __init__(self, message: str = "file transfer disabled on device") -> None:
        super().__init__(message)


class FileTooLarge(PayloadTooLarge):
    """The upload exceeds the configured maximum (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the file exceeds the limit of {limit} bytes")


class ShuttingDown(ServiceUnavailable):
    """The instance is draining its connections (503)."""

    def __init__(self) -> None:
        super().__init__("the service is shutting down")
