"""A task that runs for the duration of a block: started on entry, cancelled on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Final

__all__ = ["in_background"]

# How long a cancelled task has to end before it is cancelled again (seconds).
_RECANCEL: Final = 1.0


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None], *, name: str) -> AsyncIterator[None]:
    """Run `work` as a task while the block runs; cancel it and wait for it at the end."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        # A library call can swallow a cancellation (the work then carries on with its
        # loop): cancel again until the task has ended.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_RECANCEL)
        with contextlib.suppress(asyncio.CancelledError):
            await task
