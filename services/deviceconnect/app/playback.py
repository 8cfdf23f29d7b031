"""Playing back a recorded terminal session as shell frames, paced like the original."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from services.deviceconnect.app.errors import SessionNotFound
from services.deviceconnect.app.protocol import SHELL, Frame, encode
from services.deviceconnect.app.recording import OUTPUT, RESIZE, replay
from services.deviceconnect.store import DataStore

__all__ = ["MAX_GAP_MS", "PlaybackApp"]

# The longest pause replayed, as Mender caps recorded delays (two bytes of milliseconds).
MAX_GAP_MS: Final = 65_535


class PlaybackApp:
    """Replays recorded sessions of the caller's tenant."""

    def __init__(self, store: DataStore) -> None:
        self._store = store

    async def check(self, tenant_id: str, session_id: str) -> None:
        """Raise SessionNotFound unless the tenant has a recorded session with that id."""
        if await self._store.get_session(tenant_id, session_id) is None:
            raise SessionNotFound()

    async def frames(
        self, tenant_id: str, session_id: str, *, sleep_ms: int | None
    ) -> AsyncIterator[bytes]:
        """The session's output and resizes as frames, at the recorded pace.

        With `sleep_ms`, the pause between frames is that many milliseconds instead.
        """
        async for gap, kind, payload in replay(self._store, tenant_id, session_id):
            pause = gap if sleep_ms is None else sleep_ms
            if pause > 0:
                await asyncio.sleep(min(pause, MAX_GAP_MS) / 1000)
            if kind == OUTPUT:
                yield encode(Frame(SHELL, "shell", session_id, body=bytes(payload)))
            elif kind == RESIZE:
                width, height = payload
                props = {"terminal_width": width, "terminal_height": height}
                yield encode(Frame(SHELL, "resize", session_id, props))
