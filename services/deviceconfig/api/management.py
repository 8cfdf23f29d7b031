"""Management API: a device's desired configuration and its deployment."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response

from common.core.audit import Actor
from services.deviceconfig.api.deps import ConfigurationBody, DeviceConfigAppDep, UserIdentity
from services.deviceconfig.api.schemas import DeployIn, DeployOut, DeviceConfigurationOut

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v1/deviceconfig"

router = APIRouter(prefix=PREFIX, tags=["management"])


@router.get(
    "/configurations/device/{device_id}",
    response_model=DeviceConfigurationOut,
    response_model_exclude_none=True,
)
async def get_configuration(
    device_id: str, identity: UserIdentity, configurations: DeviceConfigAppDep
) -> DeviceConfigurationOut:
    """A device's desired and reported configurations."""
    return DeviceConfigurationOut.of(await configurations.device(identity.tenant, device_id))


@router.put("/configurations/device/{device_id}", status_code=204)
async def set_configuration(
    device_id: str,
    identity: UserIdentity,
    configurations: DeviceConfigAppDep,
    configuration: ConfigurationBody,
) -> Response:
    """Replace a device's desired configuration."""
    await configurations.set_configuration(
        identity.tenant, device_id, configuration, actor=Actor.of(identity)
    )
    return Response(status_code=204)


@router.post("/configurations/device/{device_id}/deploy")
async def deploy_configuration(
    device_id: str, body: DeployIn, identity: UserIdentity, configurations: DeviceConfigAppDep
) -> DeployOut:
    """Deploy a device's desired configuration to it."""
    deployment_id = await configurations.deploy(
        identity.tenant,
        device_id,
        retries=body.retries,
        update_control_map=body.update_control_map,
        actor=Actor.of(identity),
    )
    return DeployOut(deployment_id=deployment_id)
