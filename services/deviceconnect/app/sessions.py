"""A user's websocket bridged to a device: terminals, port forwarding, commands.

Every user websocket is one session with its own id. The server stamps that id and the
user's id on every frame the user sends (whatever the client wrote there), so a user can
never reach another session; the device's frames of the session come back unchanged.
Terminal output is recorded; starting and stopping a terminal or a port forward is recorded
as an audit event in the outbox. When the user leaves, a shell still running on the device
is stopped and other protocol sessions are closed, as Mender does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from common.core.outbox import Effect
from services.deviceconnect.app.connections import Connections
from services.deviceconnect.app.hub import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    OVERFLOW,
    Channel,
    ChannelClosed,
    FrameSocket,
)
from services.deviceconnect.app.protocol import (
    CONTROL,
    KNOWN_TYPES,
    MENDER_CLIENT,
    PORT_FORWARD,
    SHELL,
    STATUS_ERROR,
    Frame,
    MalformedFrame,
    decode,
    encode,
    pack_body,
)
from services.deviceconnect.app.recording import Recorder
from services.deviceconnect.clients.auditlogs import audit_event
from services.deviceconnect.models import Session, SessionKind
from services.deviceconnect.store import DataStore

__all__ = ["CLOSE_UNSUPPORTED", "ActiveSession", "Ending", "SessionsApp"]


CLOSE_UNSUPPORTED: Final = 1003
SESSION_LIMIT: Final = "session byte limit exceeded"
_USER_LEFT: Final = "user disconnected"


@dataclass(frozen=True, slots=True)
class Ending:
    """How a session ended, for the user's websocket: close code and reason."""

    code: int
    reason: str


class _Violation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.ending = Ending(code, reason)


class _LockedSocket:
    """Serialises the writes of the two directions of a session to the user's websocket."""

    def __init__(self, socket: FrameSocket) -> None:
        self._socket = socket
        self._lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self._socket.send(data)


class ActiveSession:
    """One user's session with one device."""

    def __init__(
        self,
        app: SessionsApp,
        *,
        tenant_id: str,
        session: Session,
        channel: Channel,
        recorder: Recorder,
    ) -> None:
        self._app = app
        self.tenant_id = tenant_id
        self.session = session
        self.channel = channel
        self.recorder = recorder
        self.kinds: list[SessionKind] = []
        self.terminal = False

    @property
    def id(self) -> str:
        """The session id."""
        return self.session.id

    def _audit(self, action: str) -> Effect:
        return audit_event(
            self.tenant_id,
            action=action,
            user_id=self.session.user_id,
            device_id=self.session.device_id,
            session_id=self.id,
            when=self._app.clock(),
        )

    async def _begin(self, kind: SessionKind, action: str) -> None:
        if kind not in self.kinds:
            self.kinds.append(kind)
        await self._app.record_effects([self._audit(action)])

    async def from_user(self, data: bytes, user: _LockedSocket) -> None:
        """Stamp a user's frame with the session and user ids and pass it to the device."""
        try:
            frame = decode(data)
        except MalformedFrame as exc:
            raise _Violation(CLOSE_UNSUPPORTED, str(exc)[:120]) from None
        if frame.typ not in KNOWN_TYPES.get(frame.proto, ()):
            await user.send(
                encode(
                    Frame(
                        proto=CONTROL,
                        typ="error",
                        sid=self.id,
                        body=pack_body(
                            {
                                "err": f"unknown message type {frame.proto}/{frame.typ!r}",
                                "close": False,
                                "msgproto": frame.proto,
                                "msgtype": frame.typ,
                            }
                        ),
                    )
                )
            )
            return
        frame = frame.with_session(self.id, user_id=self.session.user_id)
        if frame.proto == SHELL:
            if frame.typ == "new" and not self.terminal:
                self.terminal = True
                await self._begin(SessionKind.TERMINAL, "open_terminal")
            elif frame.typ == "stop" and self.terminal:
                self.terminal = False
                await self._app.record_effects([self._audit("close_terminal")])
            elif frame.typ == "resize":
                width, height = _size(frame.props)
                if width and height:
                    await self.recorder.resize(width, height)
        elif (
            frame.proto == PORT_FORWARD
            and frame.typ == "new"
            and SessionKind.PORT_FORWARD not in self.kinds
        ):
            await self._begin(SessionKind.PORT_FORWARD, "open_portforward")
        await self.channel.send(encode(frame))

    async def from_device(self, data: bytes, user: _LockedSocket) -> None:
        """Record the device's terminal output and pass the frame to the user."""
        try:
            frame = decode(data)
        except MalformedFrame:
            frame = Frame(proto=0)
        if frame.proto == SHELL and frame.typ == "shell":
            if not await self.recorder.output(frame.body):
                await self._over_limit(user)
        elif frame.proto == SHELL and frame.typ == "stop" and self.terminal:
            self.terminal = False
            await self._app.record_effects([self._audit("close_terminal")])
        await user.send(data)

    async def _over_limit(self, user: _LockedSocket) -> None:
        status = {"status": STATUS_ERROR}
        await user.send(encode(Frame(SHELL, "shell", self.id, status, SESSION_LIMIT.encode())))
        raise _Violation(CLOSE_POLICY, SESSION_LIMIT)

    async def finish(self, reason: str) -> None:
        """Leave the device in order and record how the session ended."""
        closing: list[Effect] = []
        with contextlib.suppress(ChannelClosed):
            if self.terminal:
                props = {"status": STATUS_ERROR, "user_id": self.session.user_id}
                message = SESSION_LIMIT if reason == SESSION_LIMIT else _USER_LEFT
                await self.channel.send(
                    encode(Frame(SHELL, "stop", self.id, props, message.encode()))
                )
            if any(kind is not SessionKind.TERMINAL for kind in self.kinds):
                await self.channel.send(encode(Frame(CONTROL, "close", self.id)))
        if self.terminal:
            self.terminal = False
            closing.append(self._audit("close_terminal"))
        if SessionKind.PORT_FORWARD in self.kinds:
            closing.append(self._audit("close_portforward"))
        await self.channel.close(reason)
        await self.recorder.flush()
        end = self._app.clock()
        self.session = self.session.model_copy(
            update={
                "end_ts": end,
                "kinds": tuple(self.kinds),
                "bytes_recorded": self.recorder.recorded,
            }
        )
        await self._app.end(self.tenant_id, self.session, closing)


def _size(props: Any) -> tuple[int, int]:
    width, height = props.get("terminal_width"), props.get("terminal_height")
    if not isinstance(width, int) or not isinstance(height, int):
        return 0, 0
    if not (0 < width < 65536 and 0 < height < 65536):
        return 0, 0
    return width, height


class SessionsApp:
    """Opens and serves users' sessions with devices; sends commands to devices."""

    def __init__(
        self,
        store: DataStore,
        connections: Connections,
        *,
        clock: Callable[[], datetime],
        recording_limit: int,
        recording_expire: timedelta,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._connections = connections
        self.clock = clock
        self._recording_limit = recording_limit
        self._recording_expire = recording_expire
        self._notify = notify

    async def record_effects(self, effects: list[Effect]) -> None:
        """Queue audit events and wake their delivery."""
        await self._store.add_effects(effects)
        self._notify()

    async def end(self, tenant_id: str, session: Session, effects: list[Effect]) -> None:
        """Record a finished session and its closing audit events."""
        await self._store.end_session(
            tenant_id,
            session,
            expire_ts=self.clock() + self._recording_expire,
            effects=effects,
        )
        if effects:
            self._notify()

    async def open(self, tenant_id: str, user_id: str, device_id: str) -> ActiveSession:
        """Start a session with a connected device (DeviceNotConnected otherwise)."""
        sid = str(uuid.uuid4())
        channel = await self._connections.open(tenant_id, device_id, sid)
        session = Session(id=sid, user_id=user_id, device_id=device_id, start_ts=self.clock())
        try:
            await self._store.start_session(
                tenant_id, session, expire_ts=session.start_ts + self._recording_expire
            )
        except BaseException:
            await channel.close()
            raise
        recorder = Recorder(
            self._store,
            tenant_id,
            sid,
            limit=self._recording_limit,
            expire=self._recording_expire,
            clock=self.clock,
        )
        return ActiveSession(
            self, tenant_id=tenant_id, session=session, channel=channel, recorder=recorder
        )

    async def serve(
        self, active: ActiveSession, socket: FrameSocket, incoming: AsyncIterator[bytes]
    ) -> Ending | None:
        """Bridge the user's frames and the device's until either side ends.

        Returns how to close the user's websocket, or None when the user left.
        """
        user = _LockedSocket(socket)

        async def upstream() -> Ending | None:
            async for data in incoming:
                await active.from_user(data, user)
            return None

        async def downstream() -> Ending | None:
            while (data := await active.channel.recv()) is not None:
                await active.from_device(data, user)
            reason = active.channel.reason
            return Ending(CLOSE_POLICY if reason == OVERFLOW else CLOSE_NORMAL, reason)

        async def ended() -> Ending | None:
            # The session may end while a send to a user who does not read is stuck.
            await active.channel.ended()
            reason = active.channel.reason
            return Ending(CLOSE_POLICY if reason == OVERFLOW else CLOSE_NORMAL, reason)

        tasks = [
            asyncio.create_task(upstream()),
            asyncio.create_task(downstream()),
            asyncio.create_task(ended()),
        ]
        ending: Ending | None = Ending(CLOSE_NORMAL, _USER_LEFT)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            try:
                ending = first.result()
            except _Violation as exc:
                ending = exc.ending
            except ChannelClosed as exc:
                ending = Ending(CLOSE_NORMAL, exc.reason)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ChannelClosed, _Violation):
                    await task
            reason = ending.reason if ending is not None else _USER_LEFT
            await active.finish(reason)
        return ending

    async def command(
        self, tenant_id: str, device_id: str, command: str, *, user_id: str | None
    ) -> None:
        """Have the device's Mender client check for an update or send its inventory."""
        props = {"user_id": user_id} if user_id else {}
        frame = Frame(MENDER_CLIENT, command, f"cmd-{uuid.uuid4()}", props)
        await self._connections.deliver(tenant_id, device_id, encode(frame))
