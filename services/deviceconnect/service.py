"""How deviceconnect is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="deviceconnect",
    env_prefix="DEVICECONNECT_",
    internal_name="deviceconnect",
    database="deviceconnect",
    peers=("auditlogs",),
)
