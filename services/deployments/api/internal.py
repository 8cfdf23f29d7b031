"""Internal API (`/api/internal/v1/deployments`), for peer services only.

Every route carries the tenant in the path; the empty tenant (`/tenants//…`) is the default
one. Routes under `/tenants/` stream their bodies (artifact uploads), so JSON bodies here are
read with an explicit size limit.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, StrictStr

from common.core.errors import BadRequest
from common.web.multipart import MultipartStream
from common.web.paging import PageDep, set_page_headers
from common.web.routing import TENANT
from services.deployments.api.deps import (
    ArtifactsAppDep,
    DeploymentsAppDep,
)
from services.deployments.api.queries import deployment_filter
from services.deployments.api.schemas import (
    ConfigurationDeploymentRequest,
    DeploymentOut,
    DeviceDeploymentOut,
    LastStatusesOut,
    LastStatusesRequest,
    StorageLimitIn,
    StorageLimitOut,
)

__all__ = ["PREFIX", "STREAM_PATH", "router"]

PREFIX: Final = "/api/internal/v1/deployments"
STREAM_PATH: Final = PREFIX + "/tenants/[^/]*/artifacts"
_MAX_HISTORY_PAGE: Final = 20
# NOTE: Mender's internal upload names the default tenant "default".
_DEFAULT_TENANT_ALIAS: Final = "default"

router = APIRouter(prefix=PREFIX, tags=["internal"])


class _NewTenant(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tenant_id: StrictStr


class _StorageSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: StrictStr | None = None
    region: StrictStr | None = None
    bucket: StrictStr
    uri: StrictStr | None = None
    external_uri: StrictStr | None = None
    key: StrictStr
    secret: StrictStr
    token: StrictStr | None = None
    force_path_style: bool | None = None
    use_accelerate: bool | None = None
    connection_string: StrictStr | None = None
    container_name: StrictStr | None = None
    account_name: StrictStr | None = None
    account_key: StrictStr | None = None


@router.post("/tenants", status_code=201)
async def provision_tenant(body: _NewTenant) -> Response:
    """Provision a tenant (its data lives in the shared, tenant-keyed collections)."""
    if not body.tenant_id:
        raise BadRequest("tenant_id: cannot be blank.")
    return Response(status_code=201)


@router.get(f"/tenants/{TENANT}/storage/settings")
async def get_storage_settings(tenant_id: str, artifacts: ArtifactsAppDep) -> dict[str, Any]:
    """The tenant's storage settings ({} when the defaults apply)."""
    store_settings = await artifacts.storage_settings(tenant_id)
    return store_settings or {}


@router.put(f"/tenants/{TENANT}/storage/settings", status_code=204)
async def put_storage_settings(
    tenant_id: str,
    artifacts: ArtifactsAppDep,
    document: Annotated[dict[str, Any] | None, Body()] = None,
) -> Response:
    """Set (or with null / {} clear) the tenant's storage settings."""
    if not document:
        await artifacts.set_storage_settings(tenant_id, None)
        return Response(status_code=204)
    try:
        parsed = _StorageSettings.model_validate(document)
    except ValueError as exc:
        raise BadRequest(f"invalid request: {exc}") from None
    if parsed.type not in (None, "s3", "azure"):
        raise BadRequest("type: must be one of s3, azure")
    await artifacts.set_storage_settings(tenant_id, parsed.model_dump(exclude_none=True))
    return Response(status_code=204)


@router.get(f"/tenants/{TENANT}/limits/storage", response_model=StorageLimitOut)
async def get_storage_limit(tenant_id: str, artifacts: ArtifactsAppDep) -> StorageLimitOut:
    """The tenant's storage limit and usage."""
    limit, usage = await artifacts.storage_limit(tenant_id)
    return StorageLimitOut(limit=limit, usage=usage)


@router.put(f"/tenants/{TENANT}/limits/storage", status_code=204)
async def set_storage_limit(
    tenant_id: str, body: StorageLimitIn, artifacts: ArtifactsAppDep
) -> Response:
    """Set the tenant's storage limit (0 = unlimited)."""
    await artifacts.set_storage_limit(tenant_id, body.limit)
    return Response(status_code=204)


@router.get(
    f"/tenants/{TENANT}/deployments",
    response_model=list[DeploymentOut],
    response_model_exclude_none=True,
)
async def deployments_per_tenant(
    tenant_id: str,
    request: Request,
    response: Response,
    page: PageDep,
    deployments: DeploymentsAppDep,
) -> list[DeploymentOut]:
    """The tenant's deployments (status, search, created_before/after, sort; paged)."""
    items, total = await deployments.search(
        tenant_id,
        deployment_filter(request.query_params, v2=False),
        skip=page.skip,
        limit=page.per_page,
    )
    set_page_headers(request, response, page, total=total)
    return [DeploymentOut.of(d) for d in items]


@router.get(
    f"/tenants/{TENANT}/deployments/devices",
    response_model=list[DeviceDeploymentOut],
    response_model_exclude_none=True,
)
async def list_device_deployments_by_ids(
    tenant_id: str,
    request: Request,
    response: Response,
    page: PageDep,
    deployments: DeploymentsAppDep,
) -> list[DeviceDeploymentOut]:
    """Device deployments by their ids (`id` repeated)."""
    ids = [i for i in request.query_params.getlist("id") if i]
    if not ids:
        raise BadRequest("id: cannot be blank")
    if page.per_page > _MAX_HISTORY_PAGE:
        raise BadRequest(f"invalid per_page query: must be at most {_MAX_HISTORY_PAGE}")
    views, total = await deployments.device_deployments_by_ids(
        tenant_id, ids, skip=page.skip, limit=page.per_page
    )
    set_page_headers(request, response, page, total=total)
    return [DeviceDeploymentOut.of(v) for v in views]


@router.get(
    f"/tenants/{TENANT}/deployments/devices/{{id}}",
    response_model=list[DeviceDeploymentOut],
    response_model_exclude_none=True,
)
async def list_device_deployments_internal(
    tenant_id: str,
    id: str,
    request: Request,
    response: Response,
    page: PageDep,
    deployments: DeploymentsAppDep,
) -> list[DeviceDeploymentOut]:
    """A device's deployment history."""
    if page.per_page > _MAX_HISTORY_PAGE:
        raise BadRequest(f"invalid per_page query: must be at most {_MAX_HISTORY_PAGE}")
    views, total = await deployments.device_history(
        tenant_id,
        id,
        status=request.query_params.get("status"),
        skip=page.skip,
        limit=page.per_page,
    )
    set_page_headers(request, response, page, total=total)
    return [DeviceDeploymentOut.of(v) for v in views]


@router.delete(f"/tenants/{TENANT}/deployments/devices/{{id}}", status_code=204)
async def abort_device_deployments_internal(
    tenant_id: str, id: str, deployments: DeploymentsAppDep
) -> Response:
    """Decommission a device: its deployments end as `decommissioned` (idempotent)."""
    await deployments.decommission_device(tenant_id, id)
    return Response(status_code=204)


@router.post(f"/tenants/{TENANT}/artifacts", status_code=201)
async def new_image_for_tenant(
    tenant_id: str, request: Request, artifacts: ArtifactsAppDep
) -> Response:
    """Upload an artifact for a tenant (multipart, as the management upload)."""
    tenant = "" if tenant_id == _DEFAULT_TENANT_ALIAS else tenant_id
    form = MultipartStream(request)
    fields = await form.fields_until(
        "artifact", missing="request does not contain the artifact file"
    )
    raw_size = fields.get("size", "").strip()
    try:
        declared = int(raw_size) if raw_size else None
    except ValueError:
        raise BadRequest(f"invalid form value 'size': {raw_size!r} is not an integer") from None
    artifact = await artifacts.upload(
        tenant,
        chunks=form.file_chunks(),
        description=fields.get("description", ""),
        artifact_id=fields.get("artifact_id") or None,
        declared_size=declared,
    )
    return Response(
        status_code=201,
        headers={"Location": f"/api/management/v1/deployments/artifacts/{artifact.id}"},
    )


@router.post(
    f"/tenants/{TENANT}/configuration/deployments/{{deployment_id}}/devices/{{device_id}}",
    status_code=201,
)
async def post_device_configuration_deployment(
    tenant_id: str,
    deployment_id: str,
    device_id: str,
    body: ConfigurationDeploymentRequest,
    deployments: DeploymentsAppDep,
) -> Response:
    """Create a configuration deployment for one device."""
    configuration = (
        body.configuration
        if isinstance(body.configuration, str)
        else json.dumps(body.configuration, separators=(",", ":"))
    )
    deployment = await deployments.create_configuration(
        tenant_id,
        deployment_id=deployment_id,
        device_id=device_id,
        name=body.name,
        configuration=configuration,
        retries=body.retries,
    )
    return Response(
        status_code=201,
        headers={"Location": f"/api/management/v1/deployments/deployments/{deployment.id}"},
    )


@router.post(f"/tenants/{TENANT}/devices/deployments/last", response_model=LastStatusesOut)
async def get_device_deployment_last_status(
    tenant_id: str, body: LastStatusesRequest, deployments: DeploymentsAppDep
) -> LastStatusesOut:
    """How each listed device's latest deployment ended."""
    if not body.device_ids:
        raise BadRequest("device_ids: cannot be blank.")
    return LastStatusesOut.of(await deployments.last_statuses(tenant_id, body.device_ids))
