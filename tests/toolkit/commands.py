"""The database commands a service sends, recorded, and their query plans checked.

Store tests use `CommandRecorder` to pin how many commands a hot-path request costs, and
`assert_indexed` to check that every filter among them is served by an index (the embedded
server answers some filters an index could serve with a collection scan: an equality on a
field the index does not hold, beside those it does, makes it scan).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from pymongo import AsyncMongoClient, monitoring

from common.core.mongo import Document

__all__ = ["CommandRecorder", "assert_indexed", "recording"]

_DATA_COMMANDS: Final = (
    "find",
    "findAndModify",
    "update",
    "delete",
    "count",
    "aggregate",
    "insert",
)
# Sent to the admin database: counted wherever they go.
_TRANSACTION_ENDS: Final = ("commitTransaction", "abortTransaction")


class CommandRecorder(monitoring.CommandListener):
    """Records the commands sent to one database (and transaction ends) while active."""

    def __init__(self) -> None:
        self.database = ""
        self.commands: list[tuple[str, dict[str, Any]]] = []

    @property
    def names(self) -> list[str]:
        """The names of the recorded commands, in order."""
        return [name for name, _ in self.commands]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Keep the command if it is one of the recorded database's, or ends a transaction."""
        if not self.database:
            return
        if (
            event.database_name == self.database and event.command_name in _DATA_COMMANDS
        ) or event.command_name in _TRANSACTION_ENDS:
            self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to record."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to record."""


_recorder = CommandRecorder()
monitoring.register(_recorder)


@contextmanager
def recording(database: str) -> Iterator[CommandRecorder]:
    """Record the commands sent to `database` (by any client) within the block."""
    _recorder.database = database
    _recorder.commands.clear()
    try:
        yield _recorder
    finally:
        _recorder.database = ""


def _filters(name: str, command: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    if name == "find":
        return [(command.get("filter") or {}, command.get("sort"))]
    if name in ("update", "delete"):
        key = "updates" if name == "update" else "deletes"
        return [(u.get("q") or {}, None) for u in command.get(key, [])]
    if name == "count":
        return [(command.get("query") or {}, None)]
    return []


def _by_id(filter_: dict[str, Any]) -> bool:
    # The embedded server looks an `_id` equality up directly (its cost does not grow with
    # the collection), but its `explain` describes a scan whenever other fields join it.
    # A top-level operator (`$expr`, `$or`, `$and`) beside it makes it scan in earnest.
    value = filter_.get("_id")
    return (
        value is not None
        and not isinstance(value, dict)
        and not any(key.startswith("$") for key in filter_)
    )


async def assert_indexed(
    mongo: AsyncMongoClient[Document], database: str, recorded: CommandRecorder
) -> None:
    """Fail if the plan of any recorded filter scans its collection."""
    for name, command in recorded.commands:
        if name in _TRANSACTION_ENDS:
            continue
        collection = command[name]
        # Whatever its filter, the embedded server finds the document to write by scanning.
        assert name != "findAndModify", f"findAndModify on {collection} scans the collection"
        for filter_, sort in _filters(name, command):
            if _by_id(filter_):
                continue
            find: dict[str, Any] = {"find": collection, "filter": filter_, "limit": 1}
            if sort:
                find["sort"] = sort
            plan = await mongo[database].command({"explain": find, "verbosity": "queryPlanner"})
            assert "COLLSCAN" not in str(plan["queryPlanner"]["winningPlan"]), (
                f"{name} on {collection} with {filter_} scans the collection"
            )
