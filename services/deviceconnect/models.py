"""Domain models of deviceconnect: devices' connection state and user sessions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Channel",
    "ChannelClosed",
    "ConnectionStatus",
    "Device",
    "Model",
    "Session",
    "SessionKind",
]


class Model(BaseModel):
    """Base of every domain model: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ConnectionStatus(StrEnum):
    """Whether a device holds a websocket to the server."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    UNKNOWN = "unknown"


class Device(Model):
    """A device's connection state.

    `version` grows with every connection, so the end of an old connection never marks a
    newer one disconnected; `instance` names the server process holding the connection.
    """

    id: str
    status: ConnectionStatus
    version: int = 0
    instance: str = ""
    created_ts: datetime
    updated_ts: datetime


class SessionKind(StrEnum):
    """What a user did in a session (what the audit trail records)."""

    TERMINAL = "terminal"
    PORT_FORWARD = "portforward"
    FILE_TRANSFER = "filetransfer"


class Session(Model):
    """A user's session with a device: a websocket, or one file transfer."""

    id: str
    user_id: str
    device_id: str
    start_ts: datetime
    end_ts: datetime | None = None
    kinds: tuple[SessionKind, ...] = ()
    bytes_recorded: int = 0


class ChannelClosed(Exception):
    """The other end of a session is gone; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Channel(Protocol):
    """The user side of a session: frames to the device and the device's frames back."""

    async def send(self, data: bytes) -> None:
        """Send a frame to the device; raise `ChannelClosed` when it is gone."""
        ...

    async def recv(self) -> bytes | None:
        """The device's next frame for this session; None once the session ended."""
        ...

    async def ended(self) -> None:
        """Return once the session has ended (even while a send to the user is stuck)."""
        ...

    @property
    def reason(self) -> str:
        """Why `recv` returned None."""
        ...

    async def close(self, reason: str = "closed") -> None:
        """Leave the session, telling the other end why (idempotent)."""
        ...
