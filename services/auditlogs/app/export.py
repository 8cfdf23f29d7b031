"""The CSV export: one row per event, rendered as the events stream out of the store.

A cell a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
carriage return) is prefixed with `'`, so opening an export never runs what an actor
typed into a name or a change.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Final

from services.auditlogs.models import AuditLog

__all__ = ["HEADER", "csv_chunks", "defuse"]

HEADER: Final = (
    "time",
    "actor.id",
    "actor.type",
    "actor.email",
    "actor.identity_data",
    "action",
    "object.id",
    "object.type",
    "object.name",
    "change",
)
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
_CHUNK: Final = 64 * 1024  # bytes of rows gathered before they are sent


def defuse(value: str) -> str:
    """The cell's text, made inert if a spreadsheet would evaluate it."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _row(log: AuditLog) -> list[str]:
    when = log.time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    cells = [
        when,
        log.actor.id,
        log.actor.type,
        log.actor.email or "",
        log.actor.identity_data or "",
        log.action,
        log.object_.id,
        log.object_.type,
        log.object_.label,
        log.change or "",
    ]
    return [defuse(cell) for cell in cells]


async def csv_chunks(logs: AsyncIterator[AuditLog]) -> AsyncIterator[bytes]:
    """The CSV text of the events, header first, in chunks of bounded size."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    async for log in logs:
        writer.writerow(_row(log))
        if buffer.tell() >= _CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
