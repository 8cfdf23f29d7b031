"""The lifespan's background tasks end on close, even one that swallows a cancellation."""

from __future__ import annotations

import asyncio

from services.deployments.app.tasks import BackgroundTasks
from tests.toolkit import Stubborn


async def test_close_ends_a_task_that_swallows_its_cancellation() -> None:
    stubborn = Stubborn()
    tasks = BackgroundTasks()
    task = tasks.spawn(stubborn.run(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await tasks.close()
    assert task.done()
    assert stubborn.swallowed == 2
