"""What the benchmarks read from /proc: a process's CPU time and memory, the machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        # utime and stime are fields 14 and 15 of /proc/<pid>/stat, in clock ticks.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory (`VmRSS`) of a process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine() -> list[str]:
    """Markdown list items describing the machine and its load right now."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    load = Path("/proc/loadavg").read_text().split()[:3]
    return [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- nproc: {os.cpu_count()} ({cpu}), memory {mem_kib / 1024 / 1024:.1f} GiB",
        f"- kernel: {platform.release()}, python {platform.python_version()}",
        f"- load average when the report was written: {' '.join(load)} (1, 5, 15 min)",
    ]
