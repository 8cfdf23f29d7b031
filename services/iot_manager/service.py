"""How iot_manager is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import LocalResource, ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="iot_manager",
    env_prefix="IOT_MANAGER_",
    internal_name="iot-manager",
    database="iot-manager",
    peers=("auditlogs",),
    local_env={
        "AES_ENCRYPTION_KEY": LocalResource.CREDENTIALS_KEY,
    },
)
