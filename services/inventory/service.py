"""How inventory is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="inventory",
    env_prefix="INVENTORY_",
    internal_name="inventory",
    database="inventory",
    peers=("devicemonitor",),
)
