"""Making the database refuse chosen commands (its `failCommand` failpoint)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from pymongo import AsyncMongoClient

from common.core.mongo import Document

__all__ = ["failing_commands"]


@asynccontextmanager
async def failing_commands(
    mongo: AsyncMongoClient[Document],
    commands: Sequence[str],
    *,
    skip: int = 0,
    times: int = 1,
    code: int = 8,
    labels: Sequence[str] = (),
) -> AsyncIterator[None]:
    """Have the database refuse `times` of these commands after `skip`.

    A refused write inside a transaction leaves that transaction uncommitted, as a process
    that dies at that point would: this is how tests cut a change between two of its writes.
    Needs a server with test commands (the session's embedded one has them).
    """
    await mongo.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"skip": skip, "times": times},
            "data": {
                "failCommands": list(commands),
                "errorCode": code,
                "errorLabels": list(labels),
            },
        }
    )
    try:
        yield
    finally:
        await mongo.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
