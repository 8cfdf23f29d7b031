"""How auditlogs is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="auditlogs",
    env_prefix="AUDITLOGS_",
    internal_name="auditlogs",
    database="auditlogs",
    peers=("useradm",),
)
