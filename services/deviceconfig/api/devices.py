"""Devices API: a device reads its desired configuration and reports what it applied."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response

from services.deviceconfig.api.deps import ConfigurationBody, DeviceConfigAppDep, DeviceIdentity
from services.deviceconfig.models import Configuration

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/devices/v1/deviceconfig"

router = APIRouter(prefix=PREFIX, tags=["devices"])


@router.get("/configuration")
async def get_configuration(
    identity: DeviceIdentity, configurations: DeviceConfigAppDep
) -> Configuration:
    """The calling device's desired configuration."""
    device = await configurations.device(identity.tenant, identity.subject)
    return device.configured


@router.put("/configuration", status_code=204)
async def set_configuration(
    identity: DeviceIdentity, configurations: DeviceConfigAppDep, configuration: ConfigurationBody
) -> Response:
    """Record the configuration the calling device has applied (replacing its last report)."""
    await configurations.report_configuration(identity.tenant, identity.subject, configuration)
    return Response(status_code=204)
