"""Waiting for a condition by polling it, with a deadline: never a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

__all__ = ["eventually", "wait_until"]

T = TypeVar("T")


def _timed_out(what: str, within: float, details: Callable[[], str] | None) -> AssertionError:
    extra = f"\n{details()}" if details is not None else ""
    return AssertionError(f"{what}: not reached within {within:g} s{extra}")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = ...,
    interval: float = ...,
    what: str = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T | None],
    *,
    within: float = ...,
    interval: float = ...,
    what: str = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], object],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    details: Callable[[], str] | None = None,
) -> object:
    """Await `probe` (plain or async) until it returns something truthy; return that value.

    Fails the test after `within` seconds, with `details()` in the message if given.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = probe()
        result = await value if inspect.isawaitable(value) else value
        if result:
            return result
        if loop.time() > deadline:
            raise _timed_out(what, within, details)
        await asyncio.sleep(interval)


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
    details: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy and return that (blocking version)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, details)
        time.sleep(interval)
