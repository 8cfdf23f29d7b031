"""Other deviceconnect instances, reached over NATS (core NATS, no JetStream).

Each instance listens on `deviceconnect.i.<instance id>` for requests about the devices
connected to it: open a session, deliver one frame, cut a device off, confirm a connection.
A session between instances is a pair of `Pipe` endpoints, `deviceconnect.s.<sid>.u` on the
user's instance and `...d` on the device's: ordered frames with sequence numbers (a gap ends
the session rather than corrupting it), flow control by acknowledgement (at most `window`
bytes unacknowledged, so neither side buffers without bound), frames larger than NATS'
payload limit split in parts, and keepalives that end the session when the other instance
goes silent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final, Protocol

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from services.deviceconnect.models import Channel, ChannelClosed

__all__ = ["LocalDevices", "NatsPeers", "Pipe"]

_log = logging.getLogger("deviceconnect.nats")

_PREFIX: Final = "deviceconnect"
_REQUEST_TIMEOUT: Final = 5.0
_PEER_GONE: Final = "the instance holding the other end stopped answering"
_LOST: Final = "frames were lost between instances"
_HEADER_ROOM: Final = 512


class LocalDevices(Protocol):
    """What this instance does for requests from other instances."""

    async def serve_remote(
        self, tenant_id: str, device_id: str, sid: str, channel: Channel
    ) -> bool:
        """Bridge a device connected here to a session on another instance."""
        ...

    async def deliver_local(self, tenant_id: str, device_id: str, frame: bytes) -> bool:
        """Write one frame to a device connected here; False when it is not."""
        ...

    async def kick(self, tenant_id: str, device_id: str, version: int | None) -> None:
        """Close the device's connection here (only versions older than `version`)."""
        ...

    def holds(self, tenant_id: str, device_id: str, version: int) -> bool:
        """Whether this instance holds that connection of the device."""
        ...


class Pipe:
    """One end of an ordered, flow-controlled frame stream between two instances."""

    def __init__(self, nc: Client, *, local: str, remote: str, window: int) -> None:
        self._nc = nc
        self.local = local
        self._remote = remote
        self._window = window
        self._chunk = max(1024, nc.max_payload - _HEADER_ROOM)
        self._sub: Subscription | None = None
        # Receiving: completed frames with the sequence number of their last part.
        self._incoming: collections.deque[tuple[int, bytes]] = collections.deque()
        self._partial = bytearray()
        self._received = 0
        self._unacked = 0
        self._arrived = asyncio.Event()
        # Sending: parts not acknowledged yet.
        self._sent = 0
        self._in_flight: collections.deque[tuple[int, int]] = collections.deque()
        self._in_flight_bytes = 0
        self._credit = asyncio.Event()
        self._done = asyncio.Event()
        self._reason: str | None = None
        now = time.monotonic()
        self.last_rx = now
        self.last_tx = now

    async def start(self) -> None:
        """Start receiving."""
        self._sub = await self._nc.subscribe(self.local, cb=self._on_message)

    @property
    def reason(self) -> str:
        """Why the pipe ended."""
        return self._reason or ""

    @property
    def finished(self) -> bool:
        """Whether the pipe has ended."""
        return self._reason is not None

    async def _on_message(self, msg: Msg) -> None:
        self.last_rx = time.monotonic()
        headers = msg.headers or {}
        kind = headers.get("K")
        if kind == "d":
            seq = int(headers.get("N", "0"))
            if seq != self._received + 1:
                self.end(_LOST)
                return
            self._received = seq
            self._partial += msg.data
            if headers.get("M") == "1":
                # Parts of a frame larger than the window are credited as they arrive (the
                # frame itself is bounded by the websocket message limit).
                with contextlib.suppress(NatsError):
                    await self._publish(b"", {"K": "a", "N": str(seq)})
                return
            self._incoming.append((seq, bytes(self._partial)))
            self._partial.clear()
            self._arrived.set()
        elif kind == "a":
            acked = int(headers.get("N", "0"))
            while self._in_flight and self._in_flight[0][0] <= acked:
                self._in_flight_bytes -= self._in_flight.popleft()[1]
            self._credit.set()
        elif kind == "b":
            self.end(msg.data.decode(errors="replace") or "closed")

    def end(self, reason: str) -> None:
        """End the pipe locally: waiting senders and receivers return."""
        if self._reason is None:
            self._reason = reason
            self._arrived.set()
            self._credit.set()
            self._done.set()

    async def ended(self) -> None:
        """Return once the pipe has ended."""
        await self._done.wait()

    async def _publish(self, data: bytes, headers: dict[str, str]) -> None:
        self.last_tx = time.monotonic()
        await self._nc.publish(self._remote, data, headers=headers)

    async def send(self, data: bytes) -> None:
        """Send one frame, waiting while the other end is `window` bytes behind."""
        parts = [data[i : i + self._chunk] for i in range(0, len(data), self._chunk)] or [b""]
        for index, part in enumerate(parts):
            while (
                self._reason is None
                and self._in_flight
                and self._in_flight_bytes + len(part) > self._window
            ):
                self._credit.clear()
                await self._credit.wait()
            if self._reason is not None:
                raise ChannelClosed(self._reason)
            self._sent += 1
            self._in_flight.append((self._sent, len(part)))
            self._in_flight_bytes += len(part)
            headers = {"K": "d", "N": str(self._sent)}
            if index < len(parts) - 1:
                headers["M"] = "1"
            await self._publish(part, headers)

    async def recv(self) -> bytes | None:
        """The next frame from the other end; None once the pipe ended."""
        while not self._incoming:
            if self._reason is not None:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        seq, data = self._incoming.popleft()
        self._unacked += len(data) or 1
        if not self._incoming or self._unacked >= self._window // 4:
            self._unacked = 0
            with contextlib.suppress(NatsError):
                await self._publish(b"", {"K": "a", "N": str(seq)})
        return data

    async def ping(self) -> None:
        """Tell the other end this one is alive."""
        with contextlib.suppress(NatsError):
            await self._publish(b"", {"K": "p"})

    async def close(self, reason: str = "closed") -> None:
        """Say goodbye to the other end, telling it why, and stop receiving (idempotent)."""
        if self._reason is None:
            self.end(reason)
            with contextlib.suppress(NatsError):
                await self._publish(reason.encode(), {"K": "b"})
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()


def _pack(**fields: Any) -> bytes:
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


class NatsPeers:
    """This instance's NATS presence: serves other instances and calls on them."""

    def __init__(self, nc: Client, *, instance_id: str, window: int, keepalive: float) -> None:
        self._nc = nc
        self._instance = instance_id
        self._window = window
        self._keepalive = keepalive
        self._pipes: set[Pipe] = set()
        self._local: LocalDevices | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(
        cls, uri: str, *, instance_id: str, window: int, keepalive: float
    ) -> AsyncIterator[NatsPeers]:
        """Connect to NATS for the duration of the block."""
        nc = await nats.connect(uri, name=f"deviceconnect-{instance_id}", max_reconnect_attempts=-1)
        try:
            yield cls(nc, instance_id=instance_id, window=window, keepalive=keepalive)
        finally:
            with contextlib.suppress(NatsError):
                await nc.drain()
            await nc.close()

    @contextlib.asynccontextmanager
    async def serving(self, local: LocalDevices) -> AsyncIterator[None]:
        """Answer other instances' requests and keep pipes alive during the block."""
        self._local = local
        sub = await self._nc.subscribe(f"{_PREFIX}.i.{self._instance}", cb=self._on_request)
        keepalive = asyncio.create_task(self._keep_alive(), name="nats-keepalive")
        try:
            yield
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
            for pipe in list(self._pipes):
                await pipe.close("the instance is shutting down")
            for task in list(self._tasks):
                task.cancel()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive / 2)
            now = time.monotonic()
            for pipe in list(self._pipes):
                if pipe.finished:
                    self._pipes.discard(pipe)
                elif now - pipe.last_rx > 3 * self._keepalive:
                    pipe.end(_PEER_GONE)
                elif now - pipe.last_tx > self._keepalive:
                    await pipe.ping()

    async def _new_pipe(self, sid: str, *, side: str) -> Pipe:
        other = "d" if side == "u" else "u"
        pipe = Pipe(
            self._nc,
            local=f"{_PREFIX}.s.{sid}.{side}",
            remote=f"{_PREFIX}.s.{sid}.{other}",
            window=self._window,
        )
        await pipe.start()
        self._pipes.add(pipe)
        return pipe

    async def _ask(self, instance: str, **fields: Any) -> bytes | None:
        """A request to another instance; None when it does not answer."""
        try:
            reply = await self._nc.request(
                f"{_PREFIX}.i.{instance}", _pack(**fields), timeout=_REQUEST_TIMEOUT
            )
        except (NoRespondersError, NatsTimeout):
            return None
        return reply.data

    async def open(self, instance: str, tenant_id: str, device_id: str, sid: str) -> Pipe | None:
        """A session with a device connected to `instance`; None when it is not there."""
        pipe = await self._new_pipe(sid, side="u")
        answer = await self._ask(instance, op="open", tenant=tenant_id, device=device_id, sid=sid)
        if answer != b"ok":
            await pipe.close()
            self._pipes.discard(pipe)
            return None
        return pipe

    async def deliver(self, instance: str, tenant_id: str, device_id: str, frame: bytes) -> bool:
        """Have `instance` write one frame to a device connected to it."""
        answer = await self._ask(
            instance, op="deliver", tenant=tenant_id, device=device_id, frame=frame
        )
        return answer == b"ok"

    async def kick(
        self, instance: str, tenant_id: str, device_id: str, version: int | None
    ) -> None:
        """Have `instance` close the device's connection (older than `version`, if given)."""
        await self._ask(instance, op="kick", tenant=tenant_id, device=device_id, version=version)

    async def holds(self, instance: str, tenant_id: str, device_id: str, version: int) -> bool:
        """Whether `instance` is alive and holds that connection of the device."""
        answer = await self._ask(
            instance, op="holds", tenant=tenant_id, device=device_id, version=version
        )
        return answer == b"yes"

    async def _on_request(self, msg: Msg) -> None:
        try:
            request = msgpack.unpackb(msg.data, raw=False)
            answer = await self._answer(request)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            _log.warning("malformed request from another instance: %s", exc)
            answer = b"error"
        if msg.reply:
            with contextlib.suppress(NatsError):
                await msg.respond(answer)

    async def _answer(self, request: dict[str, Any]) -> bytes:
        local = self._local
        assert local is not None
        op = request["op"]
        tenant, device = str(request["tenant"]), str(request["device"])
        if op == "open":
            sid = str(request["sid"])
            pipe = await self._new_pipe(sid, side="d")
            if await local.serve_remote(tenant, device, sid, pipe):
                return b"ok"
            await pipe.close()
            self._pipes.discard(pipe)
            return b"no"
        if op == "deliver":
            return (
                b"ok"
                if await local.deliver_local(tenant, device, bytes(request["frame"]))
                else b"no"
            )
        if op == "kick":
            version = request.get("version")
            await local.kick(tenant, device, int(version) if version is not None else None)
            return b"ok"
        if op == "holds":
            return b"yes" if local.holds(tenant, device, int(request["version"])) else b"no"
        raise ValueError(f"unknown operation {op!r}")
