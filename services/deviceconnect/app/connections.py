"""Device connections: their state in the database, and reaching a device wherever it is.

A device connects to one instance. Its state (`connected`/`disconnected`) is written with a
version that grows with every connection, so the end of an old connection never marks a
newer one disconnected, and with the id of the instance holding it. Sessions with a device
connected here go straight to its websocket; otherwise they go to the instance named in the
database, over `Peers` (NATS). Without peers, one instance serves everything on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Final, Protocol

from services.deviceconnect.app.errors import DeviceNotConnected, DeviceNotFound, ShuttingDown
from services.deviceconnect.app.hub import (
    CLOSE_POLICY,
    CLOSE_REPLACED,
    CLOSE_RESTART,
    DEVICE_GONE,
    OVERFLOW,
    Channel,
    ChannelClosed,
    DeviceLink,
    FrameSocket,
    Hub,
    LocalChannel,
)
from services.deviceconnect.app.protocol import wind_down
from services.deviceconnect.models import ConnectionStatus, Device
from services.deviceconnect.store import DataStore

__all__ = ["Connections", "NoPeers", "Peers"]

_NOT_ACCEPTED: Final = "the device is no longer accepted"


class Peers(Protocol):
    """The other instances of deviceconnect."""

    async def open(self, instance: str, tenant_id: str, device_id: str, sid: str) -> Channel | None:
        """A session with a device connected to `instance`; None when it is not there."""
        ...

    async def deliver(self, instance: str, tenant_id: str, device_id: str, frame: bytes) -> bool:
        """Have `instance` write one frame to the device."""
        ...

    async def kick(
        self, instance: str, tenant_id: str, device_id: str, version: int | None
    ) -> None:
        """Have `instance` close the device's connection (older than `version`, if given)."""
        ...

    async def holds(self, instance: str, tenant_id: str, device_id: str, version: int) -> bool:
        """Whether `instance` is alive and holds that connection of the device."""
        ...


class NoPeers:
    """A lone instance: no device is connected anywhere else."""

    async def open(self, instance: str, tenant_id: str, device_id: str, sid: str) -> Channel | None:
        """No other instance: nothing to open."""
        del instance, tenant_id, device_id, sid
        return None

    async def deliver(self, instance: str, tenant_id: str, device_id: str, frame: bytes) -> bool:
        """No other instance: not delivered."""
        del instance, tenant_id, device_id, frame
        return False

    async def kick(
        self, instance: str, tenant_id: str, device_id: str, version: int | None
    ) -> None:
        """No other instance: nothing to close."""
        del instance, tenant_id, device_id, version

    async def holds(self, instance: str, tenant_id: str, device_id: str, version: int) -> bool:
        """No other instance holds anything."""
        del instance, tenant_id, device_id, version
        return False


class Connections:
    """Device websockets of this instance and the way to any device's websocket."""

    def __init__(
        self,
        store: DataStore,
        *,
        instance_id: str,
        buffer_limit: int,
        stall_timeout: float,
        clock: Callable[[], datetime],
        peers: Peers | None = None,
    ) -> None:
        self._store = store
        self.instance_id = instance_id
        self._buffer_limit = buffer_limit
        self._stall_timeout = stall_timeout
        self._clock = clock
        self.peers: Peers = peers or NoPeers()
        self.hub = Hub()
        self._connecting: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.draining = False

    @contextlib.asynccontextmanager
    async def _device_lock(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock = self._connecting.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._connecting.get(key) is lock:
                del self._connecting[key]

    async def connect(self, tenant_id: str, device_id: str, socket: FrameSocket) -> DeviceLink:
        """Take a device's new websocket: it replaces any older connection, here or elsewhere."""
        if self.draining:
            raise ShuttingDown()
        link = DeviceLink(
            tenant_id,
            device_id,
            socket,
            buffer_limit=self._buffer_limit,
            stall_timeout=self._stall_timeout,
        )
        async with self._device_lock(link.key):
            replaced = self.hub.register(link)
            version, previous = await self._store.set_connected(
                tenant_id, device_id, instance=self.instance_id, now=self._clock()
            )
            link.version = version
        if replaced is not None:
            await replaced.close(CLOSE_REPLACED, "replaced by a newer connection")
        if (
            previous is not None
            and previous.status is ConnectionStatus.CONNECTED
            and previous.instance not in ("", self.instance_id)
        ):
            await self.peers.kick(previous.instance, tenant_id, device_id, version)
        return link

    async def disconnected(self, link: DeviceLink) -> None:
        """The device's websocket closed: end its sessions, record it (unless superseded)."""
        link.end_sessions(DEVICE_GONE)
        self.hub.unregister(link)
        if link.version:
            await self._store.set_disconnected(
                link.tenant_id, link.device_id, version=link.version, now=self._clock()
            )

    async def open(self, tenant_id: str, device_id: str, sid: str) -> Channel:
        """A session with the device, wherever it is connected."""
        link = self.hub.get(tenant_id, device_id)
        if link is not None:
            return LocalChannel(link, sid)
        device = await self._store.get_device(tenant_id, device_id)
        if device is None or device.status is not ConnectionStatus.CONNECTED:
            raise DeviceNotConnected()
        channel = None
        if device.instance != self.instance_id:
            channel = await self.peers.open(device.instance, tenant_id, device_id, sid)
        if channel is None:
            raise DeviceNotConnected()
        return channel

    async def deliver(self, tenant_id: str, device_id: str, frame: bytes) -> None:
        """Write one frame to the device, wherever it is connected."""
        link = self.hub.get(tenant_id, device_id)
        if link is not None:
            try:
                await link.send(frame)
            except ChannelClosed:
                raise DeviceNotConnected() from None
            return
        device = await self._store.get_device(tenant_id, device_id)
        if (
            device is None
            or device.status is not ConnectionStatus.CONNECTED
            or device.instance == self.instance_id
            or not await self.peers.deliver(device.instance, tenant_id, device_id, frame)
        ):
            raise DeviceNotConnected()

    async def cut_off(self, tenant_id: str, device: Device) -> None:
        """Close the device's connection at once, wherever it is."""
        link = self.hub.get(tenant_id, device.id)
        if link is not None:
            await link.close(CLOSE_POLICY, _NOT_ACCEPTED)
        elif device.status is ConnectionStatus.CONNECTED and device.instance != self.instance_id:
            await self.peers.kick(device.instance, tenant_id, device.id, None)

    async def status(self, tenant_id: str, device_id: str) -> Device:
        """The device's connection state, checked against the instance said to hold it."""
        device = await self._store.get_device(tenant_id, device_id)
        if device is None:
            raise DeviceNotFound()
        if device.status is not ConnectionStatus.CONNECTED or await self._alive(device, tenant_id):
            return device
        # The instance that held the connection is gone: the device is not connected.
        await self._store.set_disconnected(
            tenant_id, device_id, version=device.version, now=self._clock()
        )
        return device.model_copy(update={"status": ConnectionStatus.DISCONNECTED})

    async def _alive(self, device: Device, tenant_id: str) -> bool:
        if device.instance == self.instance_id:
            link = self.hub.get(tenant_id, device.id)
            return link is not None and link.version in (0, device.version)
        return await self.peers.holds(device.instance, tenant_id, device.id, device.version)

    # -- requests from other instances ------------------------------------------------------

    async def serve_remote(
        self, tenant_id: str, device_id: str, sid: str, channel: Channel
    ) -> bool:
        """Bridge a device connected here to a session held by another instance."""
        link = self.hub.get(tenant_id, device_id)
        if link is None or link.closed is not None:
            return False
        local = LocalChannel(link, sid)
        self._track(asyncio.create_task(_bridge(local, channel, sid), name=f"bridge-{sid}"))
        return True

    async def deliver_local(self, tenant_id: str, device_id: str, frame: bytes) -> bool:
        """Write one frame to a device connected here; False when it is not."""
        link = self.hub.get(tenant_id, device_id)
        if link is None:
            return False
        try:
            await link.send(frame)
        except ChannelClosed:
            return False
        return True

    async def kick(self, tenant_id: str, device_id: str, version: int | None) -> None:
        """Close the device's connection here (when older than `version`, if given)."""
        link = self.hub.get(tenant_id, device_id)
        if link is None:
            return
        if version is None:
            await link.close(CLOSE_POLICY, _NOT_ACCEPTED)
        elif link.version and link.version < version:
            await link.close(CLOSE_REPLACED, "replaced by a newer connection")

    def holds(self, tenant_id: str, device_id: str, version: int) -> bool:
        """Whether this instance holds that connection of the device."""
        link = self.hub.get(tenant_id, device_id)
        return link is not None and link.version in (0, version)

    # -- shutdown ---------------------------------------------------------------------------

    def start_drain(self, period: float) -> None:
        """Start draining in the background (idempotent)."""
        if not self.draining:
            self.draining = True
            self._track(asyncio.create_task(self.drain(period), name="drain"))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, period: float) -> None:
        """Refuse new connections and close the open ones, spread over `period` seconds."""
        self.draining = True
        links = list(self.hub)
        pause = period / (len(links) + 1)
        for link in links:
            await link.close(CLOSE_RESTART, "the service is shutting down")
            await asyncio.sleep(pause)

    async def close(self) -> None:
        """Stop background work: draining, bridges of sessions for other instances."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _bridge(device: Channel, remote: Channel, sid: str) -> None:
    """Relay frames both ways between a local device session and a remote user's session."""

    async def pump(source: Channel, target: Channel) -> None:
        while (data := await source.recv()) is not None:
            await target.send(data)

    tasks = [
        asyncio.create_task(pump(device, remote)),
        asyncio.create_task(pump(remote, device)),
        # Either end may close while a pump waits to send (a stalled reader).
        asyncio.create_task(device.ended()),
        asyncio.create_task(remote.ended()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ChannelClosed):
                await task
        if device.reason == OVERFLOW:
            # The user's instance can no longer reach the device: stop the session here.
            with contextlib.suppress(ChannelClosed):
                for frame in wind_down(sid, OVERFLOW):
                    await device.send(frame)
        await remote.close(device.reason or "closed")
        await device.close(remote.reason or "closed")
