"""How deviceconfig is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="deviceconfig",
    env_prefix="DEVICECONFIG_",
    internal_name="deviceconfig",
    database="deviceconfig",
    peers=("deployments", "deviceconnect", "auditlogs"),
)
