"""Terminal sessions recorded as they happen, and played back later.

A recording is a sequence of events `(gap_ms, kind, payload)`: terminal output (bytes) or a
resize (`[width, height]`), each with the time elapsed since the previous event. Events are
packed with msgpack, compressed, and stored in chunks of about 64 KiB of output (or every
couple of seconds of activity), so a crash loses at most the last chunk. A chunk is written
while the next one fills (one write in flight at a time), so the database's latency does not
slow the terminal down. A session's output is bounded: past `limit` bytes the session is
stopped, as Mender does.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, Final

import msgpack

from services.deviceconnect.store import DataStore

__all__ = ["OUTPUT", "RESIZE", "Event", "Recorder", "replay"]

OUTPUT: Final = 0
RESIZE: Final = 1
_FLUSH_BYTES: Final = 64 * 1024
_FLUSH_SECONDS: Final = 2.0

Event = tuple[int, int, Any]


class Recorder:
    """Records one session's terminal output and resizes."""

    def __init__(
        self,
        store: DataStore,
        tenant_id: str,
        session_id: str,
        *,
        limit: int,
        expire: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._tenant = tenant_id
        self._sid = session_id
        self._limit = limit
        self._expire = expire
        self._clock = clock
        self._events: list[Event] = []
        self._pending = 0
        self._seq = 0
        self._last_event = time.monotonic()
        self._last_flush = self._last_event
        self._writing: asyncio.Task[None] | None = None
        self.recorded = 0

    def _gap(self) -> int:
        now = time.monotonic()
        gap = int((now - self._last_event) * 1000)
        self._last_event = now
        return gap

    async def output(self, data: bytes) -> bool:
        """Record terminal output; False (nothing recorded) once the limit is exceeded."""
        if self.recorded + len(data) > self._limit:
            return False
        self.recorded += len(data)
        self._events.append((self._gap(), OUTPUT, data))
        self._pending += len(data)
        if self._pending >= _FLUSH_BYTES or time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            await self._write_behind()
        return True

    async def resize(self, width: int, height: int) -> None:
        """Record a change of the terminal size."""
        self._events.append((self._gap(), RESIZE, [width, height]))

    async def _write_behind(self) -> None:
        """Start writing the buffered events; wait first for the write still in flight."""
        if self._writing is not None:
            await self._writing
        self._writing = asyncio.create_task(self._write(self._take()))

    async def flush(self) -> None:
        """Store everything recorded so far (at the end of the session)."""
        if self._writing is not None:
            await self._writing
            self._writing = None
        await self._write(self._take())

    def _take(self) -> list[Event]:
        self._last_flush = time.monotonic()
        events, self._events, self._pending = self._events, [], 0
        return events

    async def _write(self, events: list[Event]) -> None:
        if not events:
            return
        self._seq += 1
        now = self._clock()
        await self._store.add_recording(
            self._tenant,
            self._sid,
            seq=self._seq,
            events=zlib.compress(msgpack.packb(events, use_bin_type=True)),
            now=now,
            expire_ts=now + self._expire,
        )


async def replay(store: DataStore, tenant_id: str, session_id: str) -> AsyncIterator[Event]:
    """A recorded session's events in order."""
    async for chunk in store.recording(tenant_id, session_id):
        for gap, kind, payload in msgpack.unpackb(zlib.decompress(chunk), raw=False):
            yield int(gap), int(kind), payload
