"""Background tasks that end when asked: a task for the duration of a block, and cancelling
a task until it has ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Final

__all__ = ["cancel_and_wait", "in_background"]

# How long a cancelled task has to end before it is cancelled again (seconds).
_RECANCEL: Final = 1.0


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None], *, name: str) -> AsyncIterator[None]:
    """Run `work` as a task while the block runs; cancel it and wait for it at the end."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        await cancel_and_wait(task)
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, however it ends (its outcome stays in it).

    A library call can swallow a cancellation (the work then carries on with its loop), so
    the task is cancelled again until it has ended.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL)
