"""A task that swallows its first cancellation, as a loop around a library call that turns a
cancellation into an error would."""

from __future__ import annotations

import asyncio

__all__ = ["Stubborn"]


class Stubborn:
    """`run()` waits forever, swallows the first cancellation and ends on the second."""

    def __init__(self) -> None:
        self.swallowed = 0

    async def run(self) -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.swallowed += 1
                if self.swallowed > 1:
                    raise
