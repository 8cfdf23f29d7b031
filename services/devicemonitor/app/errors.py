"""Domain errors of devicemonitor, with their HTTP status and message."""

from __future__ import annotations

from common.core.errors import BadRequest, Forbidden, NotFound

__all__ = ["InvalidRequest", "NoTelemetry", "OtherDevice"]


class InvalidRequest(BadRequest):
    """The request breaks a rule: a field, a size limit, a time (400)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"invalid request: {problem}")


class OtherDevice(Forbidden):
    """A device reports for a device id that is not its own (403)."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device_id {device_id!r} is not the authenticated device")


class NoTelemetry(NotFound):
    """The device has reported no sample yet (404)."""

    def __init__(self) -> None:
        super().__init__("the device has reported no telemetry")
