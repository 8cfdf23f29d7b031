"""How devicemonitor is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="devicemonitor",
    env_prefix="DEVICEMONITOR_",
    internal_name="devicemonitor",
    database="devicemonitor",
    peers=("inventory", "auditlogs"),
)
