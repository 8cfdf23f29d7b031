"""Device connections held by this instance, and the sessions multiplexed over them.

A device's websocket is a `DeviceLink`. Every session on it (a user's terminal, a file
transfer, a command) has a `SessionSink`: the device's frames for that session, buffered up
to a byte limit. When a session's reader falls that far behind, the server stops reading from
the device until the reader catches up (TCP then slows the device down), so fast output
flows at the pace of its reader; a reader that does not catch up within the stall timeout
loses its session, which frees the device for its other sessions. The server never buffers
more than the limit (and one frame) per session. The user side talks to the device through a
`Channel`: `LocalChannel` when the device is connected here, a NATS pipe when it is
connected to another instance.

The devices connected to this instance and the sessions over them are the gauges
`fleetport_deviceconnect_devices` and `fleetport_deviceconnect_sessions`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client import Gauge

from services.deviceconnect.models import Channel, ChannelClosed

__all__ = [
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_REPLACED",
    "CLOSE_RESTART",
    "Channel",
    "ChannelClosed",
    "DeviceLink",
    "FrameSocket",
    "Hub",
    "LocalChannel",
    "SessionSink",
]

_DEVICES: Final = Gauge(
    "fleetport_deviceconnect_devices", "Devices whose websocket is connected to this instance."
)
_SESSIONS: Final = Gauge(
    "fleetport_deviceconnect_sessions",
    "Sessions (terminals, file transfers, port forwards) over the devices connected here.",
)
CLOSE_NORMAL: Final = 1000
CLOSE_POLICY: Final = 1008
CLOSE_RESTART: Final = 1012
# Application close code (RFC 6455 §7.4.2): a newer connection of the same device won.
CLOSE_REPLACED: Final = 4000

DEVICE_GONE: Final = "device disconnected"
OVERFLOW: Final = "session output not read fast enough"


class FrameSocket(Protocol):
    """A websocket as the app layer sees it: binary frames out, closed with a code."""

    async def send(self, data: bytes) -> None:
        """Send one binary frame (waits while the peer does not read)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the websocket with a code and a reason."""
        ...


class SessionSink:
    """The device's frames for one session, in order, buffered up to `limit` bytes."""

    __slots__ = ("_done", "_drained", "_frames", "_limit", "_size", "_wake", "reason")

    def __init__(self, limit: int) -> None:
        self._frames: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._done = asyncio.Event()
        self.reason: str | None = None

    def put(self, data: bytes) -> None:
        """Queue a frame (the caller then waits for `drained` when `full`)."""
        if self.reason is not None:
            return
        self._frames.append(data)
        self._size += len(data)
        self._wake.set()

    @property
    def full(self) -> bool:
        """Whether the buffer holds more than the limit."""
        return self._size > self._limit

    async def drained(self, stall_timeout: float) -> None:
        """Wait until the reader caught up to half the limit; end the session if it stalls."""
        while self.full and self.reason is None:
            self._drained.clear()
            try:
                async with asyncio.timeout(stall_timeout):
                    await self._drained.wait()
            except TimeoutError:
                self.end(OVERFLOW)

    def end(self, reason: str) -> None:
        """End the session: queued frames are dropped, `get` returns None."""
        if self.reason is None:
            self.reason = reason
            self._frames.clear()
            self._size = 0
            self._wake.set()
            self._drained.set()
            self._done.set()

    async def ended(self) -> None:
        """Return once the session has ended."""
        await self._done.wait()

    async def get(self) -> bytes | None:
        """The next frame, or None once the session has ended."""
        while True:
            if self.reason is not None:
                return None
            if self._frames:
                data = self._frames.popleft()
                self._size -= len(data)
                if self._size <= self._limit // 2:
                    self._drained.set()
                return data
            self._wake.clear()
            await self._wake.wait()


class DeviceLink:
    """A device's websocket on this instance and the sessions routed over it."""

    def __init__(
        self,
        tenant_id: str,
        device_id: str,
        socket: FrameSocket,
        *,
        buffer_limit: int,
        stall_timeout: float,
    ) -> None:
        self.tenant_id = tenant_id
        self.device_id = device_id
        self.version = 0
        self._socket = socket
        self._lock = asyncio.Lock()
        self._sessions: dict[str, SessionSink] = {}
        self._buffer_limit = buffer_limit
        self._stall_timeout = stall_timeout
        self.closed: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, device): the identity of the device this link serves."""
        return (self.tenant_id, self.device_id)

    async def send(self, data: bytes) -> None:
        """Write one frame to the device, one writer at a time."""
        if self.closed is not None:
            raise ChannelClosed(DEVICE_GONE)
        async with self._lock:
            await self._socket.send(data)

    async def route(self, sid: str, data: bytes) -> bool:
        """Hand a frame from the device to its session; False when no such session.

        Returns once the session's buffer is below its limit: reading the device waits.
        """
        sink = self._sessions.get(sid)
        if sink is None:
            return False
        sink.put(data)
        if sink.full:
            await sink.drained(self._stall_timeout)
        return True

    def attach(self, sid: str) -> SessionSink:
        """Start receiving the device's frames of session `sid`."""
        if self.closed is not None:
            raise ChannelClosed(DEVICE_GONE)
        sink = SessionSink(self._buffer_limit)
        if sid not in self._sessions:
            _SESSIONS.inc()
        self._sessions[sid] = sink
        return sink

    def detach(self, sid: str) -> None:
        """Stop receiving frames of session `sid`."""
        if self._sessions.pop(sid, None) is not None:
            _SESSIONS.dec()

    @property
    def session_count(self) -> int:
        """How many sessions are open on this device."""
        return len(self._sessions)

    def end_sessions(self, reason: str) -> None:
        """End every session (the device went away)."""
        self.closed = self.closed or reason
        for sink in self._sessions.values():
            sink.end(reason)
        _SESSIONS.dec(len(self._sessions))
        self._sessions.clear()

    async def close(self, code: int, reason: str) -> None:
        """Close the device's websocket and end its sessions."""
        self.end_sessions(DEVICE_GONE)
        await self._socket.close(code, reason)


class LocalChannel:
    """A session with a device connected to this instance."""

    def __init__(self, link: DeviceLink, sid: str) -> None:
        self._link = link
        self._sid = sid
        self._sink = link.attach(sid)

    async def send(self, data: bytes) -> None:
        """Write a frame to the device (also after the session ended, to wind it down)."""
        await self._link.send(data)

    async def recv(self) -> bytes | None:
        """The device's next frame for this session."""
        return await self._sink.get()

    async def ended(self) -> None:
        """Return once the session has ended."""
        await self._sink.ended()

    @property
    def reason(self) -> str:
        """Why the session ended."""
        return self._sink.reason or ""

    async def close(self, reason: str = "closed") -> None:
        """Leave the session."""
        self._link.detach(self._sid)
        self._sink.end(reason)


class Hub:
    """The device links of this instance, one per device (the newest wins)."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, str], DeviceLink] = {}

    def register(self, link: DeviceLink) -> DeviceLink | None:
        """Make `link` the device's connection; return the one it replaces."""
        previous = self._links.get(link.key)
        self._links[link.key] = link
        if previous is None:
            _DEVICES.inc()
        return previous

    def unregister(self, link: DeviceLink) -> bool:
        """Forget `link` unless a newer connection replaced it; True when it was current."""
        if self._links.get(link.key) is link:
            del self._links[link.key]
            _DEVICES.dec()
            return True
        return False

    def get(self, tenant_id: str, device_id: str) -> DeviceLink | None:
        """The device's connection on this instance, if any."""
        return self._links.get((tenant_id, device_id))

    def __iter__(self) -> Iterator[DeviceLink]:
        return iter(list(self._links.values()))

    def __len__(self) -> int:
        return len(self._links)
