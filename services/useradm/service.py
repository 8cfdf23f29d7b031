"""How useradm is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import LocalResource, ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="useradm",
    env_prefix="USERADM_",
    internal_name="useradm",
    database="useradm",
    peers=("auditlogs",),
    local_env={
        "SERVER_PRIV_KEY_PATH": LocalResource.USER_TOKEN_KEY,
    },
)
