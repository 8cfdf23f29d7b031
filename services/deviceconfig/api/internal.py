"""Internal API (`/api/internal/v1/deviceconfig`), for peer services only.

deviceauth provisions and decommissions devices here; iot-manager sets the configuration of
the devices it provisions in a cloud and deploys it.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response

from common.web.routing import TENANT, items
from services.deviceconfig.api.deps import ConfigurationBody, DeviceConfigAppDep
from services.deviceconfig.api.schemas import DeployIn, DeployOut, NewDeviceIn, NewTenantIn

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/internal/v1/deviceconfig"

router = APIRouter(prefix=PREFIX, tags=["internal"])


@router.post("/tenants", status_code=201)
async def provision_tenant(body: NewTenantIn, configurations: DeviceConfigAppDep) -> Response:
    """Prepare for a new tenant."""
    await configurations.provision_tenant(body.tenant_id)
    return Response(status_code=201)


# The tenant of a deletion may not be empty: `/tenants/` is no way to erase the default one.
@router.delete("/tenants/{tenant_id}", status_code=204)
async def delete_tenant(tenant_id: str, configurations: DeviceConfigAppDep) -> Response:
    """Delete every device configuration of a tenant."""
    await configurations.delete_tenant(tenant_id)
    return Response(status_code=204)


@router.post(f"/tenants/{TENANT}/devices", status_code=201)
async def provision_device(
    tenant_id: str, body: NewDeviceIn | list[NewDeviceIn], configurations: DeviceConfigAppDep
) -> Response:
    """Record a newly accepted device (409 when it is already recorded); or a list of them,
    which deviceauth's outbox sends when it merges provisionings (an addition to Mender's
    single device: those already recorded are left as they are)."""
    devices = items(body)
    if isinstance(body, list):
        await configurations.provision_devices(tenant_id, [d.device_id for d in devices])
    else:
        await configurations.provision_device(tenant_id, body.device_id)
    return Response(status_code=201)


@router.delete(f"/tenants/{TENANT}/devices/{{device_id}}", status_code=204)
async def decommission_device(
    tenant_id: str, device_id: str, configurations: DeviceConfigAppDep
) -> Response:
    """Forget a decommissioned device and its configuration (404 when unknown)."""
    await configurations.decommission_device(tenant_id, device_id)
    return Response(status_code=204)


@router.patch(f"/tenants/{TENANT}/configurations/device/{{device_id}}", status_code=204)
async def update_configuration(
    tenant_id: str,
    device_id: str,
    configurations: DeviceConfigAppDep,
    configuration: ConfigurationBody,
) -> Response:
    """Add or overwrite keys of a device's desired configuration, keeping the others."""
    await configurations.update_configuration(tenant_id, device_id, configuration)
    return Response(status_code=204)


@router.post(f"/tenants/{TENANT}/configurations/device/{{device_id}}/deploy")
async def deploy_configuration(
    tenant_id: str, device_id: str, body: DeployIn, configurations: DeviceConfigAppDep
) -> DeployOut:
    """Deploy a device's desired configuration to it."""
    deployment_id = await configurations.deploy(
        tenant_id,
        device_id,
        retries=body.retries,
        update_control_map=body.update_control_map,
    )
    return DeployOut(deployment_id=deployment_id)
