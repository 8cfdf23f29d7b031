"""How deviceauth is started and wired to its peers (see `common.core.servicespec`)."""

from __future__ import annotations

from typing import Final

from common.core.servicespec import LocalResource, ServiceSpec

__all__ = ["SERVICE"]

SERVICE: Final = ServiceSpec(
    name="deviceauth",
    env_prefix="DEVICEAUTH_",
    internal_name="devauth",
    database="deviceauth",
    peers=(
        "inventory",
        "deployments",
        "deviceconnect",
        "deviceconfig",
        "iot_manager",
        "auditlogs",
        "devicemonitor",
    ),
    local_env={
        "SERVER_PRIV_KEY_PATH": LocalResource.DEVICE_TOKEN_KEY,
    },
)
