"""`in_background`: the task ends with the block, even one that swallows a cancellation."""

from __future__ import annotations

import asyncio

from common.core.background import cancel_and_wait, in_background
from tests.toolkit import Stubborn


async def test_the_task_is_cancelled_at_the_end_of_the_block() -> None:
    started = asyncio.Event()
    cancelled = False

    async def work() -> None:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise

    async with in_background(work(), name="test"):
        await started.wait()
    assert cancelled


async def test_a_swallowed_cancellation_is_repeated() -> None:
    rounds = 0

    async def stubborn() -> None:
        # As a loop around a library call that turns a cancellation into an error would.
        nonlocal rounds
        while True:
            try:
                rounds += 1
                if rounds == 1:
                    await asyncio.Event().wait()
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if rounds > 1:
                    raise
                continue

    async with asyncio.timeout(10):
        async with in_background(stubborn(), name="test"):
            await asyncio.sleep(0)
    assert rounds > 1


async def test_cancel_and_wait_repeats_a_swallowed_cancellation() -> None:
    stubborn = Stubborn()
    task = asyncio.create_task(stubborn.run())
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await cancel_and_wait(task)
    assert task.cancelled()
    assert stubborn.swallowed == 2
