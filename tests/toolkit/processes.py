"""Looking at real processes through /proc."""

from __future__ import annotations

from pathlib import Path

__all__ = ["child_pids", "is_running"]


def child_pids(pid: int) -> set[int]:
    """The ids of a process's direct children."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def is_running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status
