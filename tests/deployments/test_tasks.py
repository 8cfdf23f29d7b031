"""The lifespan's background tasks end on close, even one that swallows a cancellation."""

from __future__ import annotations

import asyncio

from services.deployments.app.tasks import BackgroundTasks


async def test_close_ends_a_task_that_swallows_its_cancellation() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    tasks = BackgroundTasks()
    task = tasks.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await tasks.close()
    assert task.done()
    assert swallowed == 2
