"""The internal API of deviceauth: token verification for the gateway, and peer calls."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query, Request, Response

from common.core.errors import BadRequest
from common.web.paging import PageDep, set_page_headers
from common.web.routing import TENANT
from services.deviceauth.api.deps import DevAuthAppDep, DeviceAuthAppDep
from services.deviceauth.api.schemas import (
    CountOut,
    DeviceOut,
    ExternalDeviceIn,
    LimitBody,
    NewTenantIn,
    StatusBody,
    UpdateDeviceAuthIn,
)
from services.deviceauth.models import ExternalIdentity

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/internal/v1/devauth"

router = APIRouter(prefix=PREFIX, tags=["internal"])

StatusQuery = Annotated[list[str] | None, Query(alias="status")]
IdQuery = Annotated[list[str] | None, Query(alias="id")]


def _token_of(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, rest = header.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else header.strip()


@router.get("/tokens/verify", response_class=Response)
@router.post("/tokens/verify", response_class=Response)
async def verify_token(request: Request, device_auth: DeviceAuthAppDep) -> Response:
    """Check a device token (the gateway asks): 200 valid, 401 invalid, 403 expired."""
    await device_auth.verify_token(_token_of(request))
    return Response(status_code=200)


@router.delete("/tokens", status_code=204, response_class=Response)
async def delete_tokens(
    devauth: DevAuthAppDep, tenant_id: str | None = None, device_id: str | None = None
) -> None:
    """Revoke the tokens of one device, or of a whole tenant when no device is given."""
    # An empty tenant id is the single-tenant install's tenant, so only absence is refused.
    if tenant_id is None:
        raise BadRequest("tenant_id must be provided")
    await devauth.delete_tokens(tenant_id, device_id=device_id or None)


@router.get(f"/tenant/{TENANT}/limits/{{name}}")
async def get_tenant_limit(tenant_id: str, name: str, devauth: DevAuthAppDep) -> LimitBody:
    """Get a tenant's limit."""
    return LimitBody(limit=await devauth.get_limit(tenant_id, name))


@router.put(f"/tenant/{TENANT}/limits/{{name}}", status_code=204, response_class=Response)
async def put_tenant_limit(
    tenant_id: str, name: str, body: LimitBody, devauth: DevAuthAppDep
) -> None:
    """Set a tenant's limit (0 = unlimited)."""
    await devauth.set_limit(tenant_id, name, value=body.limit)


@router.delete(f"/tenant/{TENANT}/limits/{{name}}", status_code=204, response_class=Response)
async def delete_tenant_limit(tenant_id: str, name: str, devauth: DevAuthAppDep) -> None:
    """Remove a tenant's limit, so the default applies."""
    await devauth.delete_limit(tenant_id, name)


@router.post("/tenants", status_code=201, response_class=Response)
async def provision_tenant(body: NewTenantIn) -> None:
    """Provision a tenant; nothing needs setting up, since tenants share the collections."""


@router.get(f"/tenants/{TENANT}/devices/count")
async def get_tenant_devices_count(
    tenant_id: str, devauth: DevAuthAppDep, status: str | None = None
) -> CountOut:
    """Count a tenant's devices, optionally of one status."""
    return CountOut(count=await devauth.count_devices(tenant_id, status=status))


@router.get(f"/tenants/{TENANT}/devices")
async def get_tenant_devices(
    tenant_id: str,
    request: Request,
    response: Response,
    devauth: DevAuthAppDep,
    page: PageDep,
    status: StatusQuery = None,
    ids: IdQuery = None,
) -> list[DeviceOut]:
    """List a tenant's devices with their auth sets; filter by status and ids."""
    devices, has_next = await devauth.list_devices(
        tenant_id, statuses=status or [], ids=ids or [], page=page
    )
    set_page_headers(request, response, page, has_next=has_next)
    return [DeviceOut.of(d) for d in devices]


@router.get(f"/tenants/{TENANT}/devices/{{device_id}}/status")
async def get_tenant_device_status(
    tenant_id: str, device_id: str, devauth: DevAuthAppDep
) -> StatusBody:
    """Get a device's admission status."""
    status = await devauth.device_status(tenant_id, device_id)
    return StatusBody(status=status.value)


@router.delete(f"/tenants/{TENANT}/devices/{{device_id}}", status_code=204, response_class=Response)
async def delete_device(tenant_id: str, device_id: str, devauth: DevAuthAppDep) -> None:
    """Delete a device with its auth sets and tokens (the last step of decommissioning)."""
    await devauth.delete_device(tenant_id, device_id)


@router.patch(f"/tenants/{TENANT}/devices/{{device_id}}", status_code=204, response_class=Response)
async def update_device_internal(
    tenant_id: str, device_id: str, body: UpdateDeviceAuthIn, devauth: DevAuthAppDep
) -> None:
    """Update a device's bookkeeping (whether the peers were provisioned)."""
    await devauth.update_device(tenant_id, device_id, provisioned=body.provisioned)


@router.put(
    f"/tenants/{TENANT}/devices/{{device_id}}/external", status_code=204, response_class=Response
)
async def set_external_identity(
    tenant_id: str, device_id: str, body: ExternalDeviceIn, devauth: DevAuthAppDep
) -> None:
    """Replace the device's identity at an external provider."""
    external = ExternalIdentity(
        id=body.id, name=body.name, provider=body.provider, id_data=body.id_data
    )
    await devauth.set_external(tenant_id, device_id, external=external)
