"""Leases on background work, so that replicas never run the same job at once.

A job's record carries who holds it (`owner`, one id per process) and until when. A process
claims a job by moving that time forward with a compare-and-set on the database, only where
it has passed (nobody holds the job, or its holder died), and keeps it moving while the job
runs (`renewing`); another replica takes the job up only once the lease has lapsed. This is
how the outbox relay claims effects, for work that takes longer than one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["LeaseTerms", "renewing"]

_log = logging.getLogger("common.core.leases")


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """This process's identity as a holder, and how long a claim lasts unless renewed."""

    duration: timedelta = timedelta(seconds=30)
    owner: str = field(default_factory=lambda: str(uuid.uuid4()))

    def until(self) -> datetime:
        """When a claim (or renewal) made now lapses."""
        return datetime.now(UTC) + self.duration


@contextlib.asynccontextmanager
async def renewing(
    renew: Callable[[datetime], Awaitable[bool]], terms: LeaseTerms, *, what: str
) -> AsyncIterator[None]:
    """Renew a claim (`renew(until)`: whether it is still held) every third of its duration
    while the block runs. A lost claim is logged: another replica has the work by then."""

    async def keep() -> None:
        interval = terms.duration.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await renew(terms.until())
            except Exception:  # the database is unreachable: try again before the lease lapses
                _log.exception("could not renew the lease on %s", what)
                continue
            if not held:
                _log.warning("lost the lease on %s to another process", what)
                return

    task = asyncio.create_task(keep(), name=f"lease-{what}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
