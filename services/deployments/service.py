"""How deployments is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import LocalResource, ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="deployments",
    env_prefix="DEPLOYMENTS_",
    internal_name="deployments",
    database="deployment_service",
    peers=("inventory", "auditlogs"),
    local_env={
        "STORAGE_PATH": LocalResource.ARTIFACTS_DIR,
        "PRESIGN_SECRET": LocalResource.DOWNLOAD_LINK_SECRET,
    },
)
