"""Management API v1: `/api/management/v1/deployments` (artifacts, deployments, releases)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from common.core.audit import Actor
from common.core.errors import BadRequest
from common.web.identity import UserIdentity
from common.web.multipart import MultipartStream
from common.web.paging import PageDep, set_page_headers
from services.deployments.api.deps import (
    ArtifactsAppDep,
    DeploymentsAppDep,
    ExternalURL,
    GenerateAppDep,
    ReleasesAppDep,
    SettingsDep,
    UploadsAppDep,
)
from services.deployments.api.queries import (
    artifact_filter_v1,
    artifact_sort,
    deployment_filter,
    release_filter,
    release_sort,
)
from services.deployments.api.schemas import (
    AbortRequest,
    ArtifactOut,
    DeploymentIdsRequest,
    DeploymentOut,
    DeviceDeploymentOut,
    DeviceWithImageOut,
    EditArtifactRequest,
    GroupDeploymentRequest,
    LinkOut,
    NewDeploymentRequest,
    ReleaseV1Out,
    StorageLimitOut,
    UploadLinkOut,
    stats_out,
)

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v1/deployments"
_MAX_HISTORY_PAGE: Final = 20

router = APIRouter(prefix=PREFIX, tags=["management"])


def _location(request: Request, item_id: str) -> dict[str, str]:
    return {"Location": f"{request.url.path.rstrip('/')}/{item_id}"}


def _go_time(when: datetime) -> str:
    """A UTC time as Go's `time.Time.String()` prints it."""
    # NOTE: Mender renders log lines with Go's default time format, e.g.
    # "2026-01-02 03:04:05.5 +0000 UTC" (fraction without trailing zeros).
    utc = when.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return utc.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "") + " +0000 UTC"


def _int_field(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"invalid form value '{name}': {raw!r} is not an integer") from None
    if value < 0:
        raise BadRequest(f"invalid form value '{name}': must not be negative")
    return value


# --- artifacts ---------------------------------------------------------------------------


@router.get("/artifacts", response_model=list[ArtifactOut], response_model_exclude_none=True)
async def get_images(
    request: Request, identity: UserIdentity, artifacts: ArtifactsAppDep
) -> list[ArtifactOut]:
    """List artifacts (filters: name, description, device_type; no paging)."""
    items, _ = await artifacts.search(identity.tenant, artifact_filter_v1(request.query_params))
    return [ArtifactOut.of(a) for a in items]


@router.post("/artifacts", status_code=201)
async def new_image(
    request: Request, identity: UserIdentity, artifacts: ArtifactsAppDep
) -> Response:
    """Upload an artifact (multipart: size, description, artifact_id, then artifact)."""
    form = MultipartStream(request)
    fields = await form.fields_until(
        "artifact", missing="request does not contain the artifact file"
    )
    artifact = await artifacts.upload(
        identity.tenant,
        chunks=form.file_chunks(),
        description=fields.get("description", ""),
        artifact_id=fields.get("artifact_id") or None,
        declared_size=_int_field(fields, "size"),
        actor=Actor.of(identity),
    )
    return Response(status_code=201, headers=_location(request, artifact.id))


@router.get("/artifacts/list", response_model=list[ArtifactOut], response_model_exclude_none=True)
async def list_images(
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    artifacts: ArtifactsAppDep,
) -> list[ArtifactOut]:
    """List artifacts a page at a time (sort: name or modified, asc or desc)."""
    items, total = await artifacts.search(
        identity.tenant,
        artifact_filter_v1(request.query_params),
        skip=page.skip,
        limit=page.per_page,
        sort=artifact_sort(request.query_params),
    )
    set_page_headers(request, response, page, total=total)
    return [ArtifactOut.of(a) for a in items]


@router.post("/artifacts/directupload", response_model=UploadLinkOut)
async def upload_link(
    identity: UserIdentity, uploads: UploadsAppDep, external_url: ExternalURL
) -> UploadLinkOut:
    """Get a one-hour link to PUT an artifact file directly."""
    intent_id, link = await uploads.request_link(
        identity.tenant, external_url=external_url, user_id=identity.subject
    )
    return UploadLinkOut(id=intent_id, uri=link.uri, expire=link.expire)


@router.post("/artifacts/directupload/{id}/complete", status_code=202)
async def complete_upload(
    id: str, request: Request, identity: UserIdentity, uploads: UploadsAppDep, settings: SettingsDep
) -> Response:
    """Process a directly uploaded artifact; it is listed once verified."""
    # Optional file metadata for Mender's skip-verify mode; every upload is verified here.
    await _drain(request, settings.request_size_limit)
    await uploads.complete(identity.tenant, id)
    return Response(status_code=202)


async def _drain(request: Request, limit: int) -> None:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BadRequest(f"request body exceeds the limit of {limit} bytes")


@router.post("/artifacts/generate", status_code=201)
async def generate_image(
    request: Request, identity: UserIdentity, generate: GenerateAppDep
) -> Response:
    """Generate a single-file artifact from an uploaded file, in the background."""
    form = MultipartStream(request)
    fields = await form.fields_until("file", missing="missing 'file' section")
    raw_types = fields.get("device_types_compatible", "")
    job = await generate.submit(
        identity.tenant,
        name=fields.get("name", ""),
        description=fields.get("description", ""),
        device_types=[t.strip() for t in raw_types.split(",") if t.strip()],
        type_=fields.get("type", ""),
        args=fields.get("args", ""),
        filename_hint=form.filename,
        chunks=form.file_chunks(),
        declared_size=_int_field(fields, "size"),
        user_id=identity.subject,
    )
    return Response(status_code=201, headers={"Location": f"{PREFIX}/artifacts/{job.id}"})


@router.get("/artifacts/{id}", response_model=ArtifactOut, response_model_exclude_none=True)
async def get_image(id: str, identity: UserIdentity, artifacts: ArtifactsAppDep) -> ArtifactOut:
    """Show one artifact."""
    return ArtifactOut.of(await artifacts.get(identity.tenant, id))


@router.put("/artifacts/{id}", status_code=204)
async def edit_image(
    id: str, body: EditArtifactRequest, identity: UserIdentity, artifacts: ArtifactsAppDep
) -> Response:
    """Change an artifact's description (not once it was deployed)."""
    await artifacts.edit(identity.tenant, id, description=body.description)
    return Response(status_code=204)


@router.delete("/artifacts/{id}", status_code=204)
async def delete_image(id: str, identity: UserIdentity, artifacts: ArtifactsAppDep) -> Response:
    """Delete an artifact and its file (409 while an active deployment uses it)."""
    await artifacts.delete(identity.tenant, id, actor=Actor.of(identity))
    return Response(status_code=204)


@router.get("/artifacts/{id}/download", response_model=LinkOut, response_model_exclude_none=True)
async def download_link(
    id: str, identity: UserIdentity, artifacts: ArtifactsAppDep, external_url: ExternalURL
) -> LinkOut:
    """A 15-minute download link to the artifact file."""
    link = await artifacts.download_link(identity.tenant, id, external_url=external_url)
    return LinkOut.of(link)


@router.get("/limits/storage", response_model=StorageLimitOut)
async def get_limit(identity: UserIdentity, artifacts: ArtifactsAppDep) -> StorageLimitOut:
    """The storage limit (0 = none) and usage."""
    limit, usage = await artifacts.storage_limit(identity.tenant)
    return StorageLimitOut(limit=limit, usage=usage)


@router.get("/limits/{name}")
async def get_unsupported_limit(name: str, identity: UserIdentity) -> None:
    """Only the `storage` limit exists."""
    del identity
    raise BadRequest(f"unsupported limit {name}")


# --- deployments: static paths first, so `/deployments/{id}` does not shadow them -------


@router.get("/deployments", response_model=list[DeploymentOut], response_model_exclude_none=True)
async def lookup_deployment(
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    deployments: DeploymentsAppDep,
) -> list[DeploymentOut]:
    """List deployments (status, type, search, created_before/after, sort; paged)."""
    filter_ = deployment_filter(request.query_params, v2=False)
    items, total = await deployments.search(
        identity.tenant, filter_, skip=page.skip, limit=page.per_page
    )
    set_page_headers(request, response, page, total=total)
    return [DeploymentOut.of(d) for d in items]


@router.post("/deployments", status_code=201)
async def post_deployment(
    request: Request,
    body: NewDeploymentRequest,
    identity: UserIdentity,
    deployments: DeploymentsAppDep,
) -> Response:
    """Deploy an artifact to devices or to every accepted device."""
    deployment = await deployments.create(
        identity.tenant,
        name=body.name,
        artifact_name=body.artifact_name,
        devices=body.devices,
        all_devices=body.all_devices,
        force_installation=body.force_installation,
        actor=Actor.of(identity),
    )
    return Response(status_code=201, headers=_location(request, deployment.id))


@router.post("/deployments/statistics/list")
async def get_deployments_stats(
    body: DeploymentIdsRequest, identity: UserIdentity, deployments: DeploymentsAppDep
) -> Response:
    """Statistics of several deployments."""
    if not body.deployment_ids:
        # NOTE: Mender answers an empty id list with an empty object.
        return JSONResponse({})
    items = await deployments.statistics_list(identity.tenant, body.deployment_ids)
    return JSONResponse([{"id": i, "stats": stats_out(s)} for i, s in items])


@router.post("/deployments/group/{name}", status_code=201)
async def deploy_to_group(
    name: str,
    body: GroupDeploymentRequest,
    identity: UserIdentity,
    deployments: DeploymentsAppDep,
) -> Response:
    """Deploy an artifact to the accepted devices of a group."""
    deployment = await deployments.create(
        identity.tenant,
        name=body.name,
        artifact_name=body.artifact_name,
        group=name,
        force_installation=body.force_installation,
        actor=Actor.of(identity),
    )
    return Response(status_code=201, headers={"Location": f"{PREFIX}/deployments/{deployment.id}"})


@router.get(
    "/deployments/releases", response_model=list[ReleaseV1Out], response_model_exclude_none=True
)
async def get_releases(
    request: Request, identity: UserIdentity, releases: ReleasesAppDep
) -> list[ReleaseV1Out]:
    """List releases (v1 shape, no paging)."""
    views, _ = await releases.search(
        identity.tenant, release_filter(request.query_params, v2=False)
    )
    return [ReleaseV1Out.of(v) for v in views]


@router.get(
    "/deployments/releases/list",
    response_model=list[ReleaseV1Out],
    response_model_exclude_none=True,
)
async def list_releases(
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    releases: ReleasesAppDep,
) -> list[ReleaseV1Out]:
    """List releases a page at a time (v1 shape)."""
    views, total = await releases.search(
        identity.tenant,
        release_filter(request.query_params, v2=False),
        skip=page.skip,
        limit=page.per_page,
        sort=release_sort(request.query_params),
    )
    set_page_headers(request, response, page, total=total)
    return [ReleaseV1Out.of(v) for v in views]


@router.get(
    "/deployments/devices/{id}",
    response_model=list[DeviceDeploymentOut],
    response_model_exclude_none=True,
)
async def list_device_deployments(
    id: str,
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    deployments: DeploymentsAppDep,
) -> list[DeviceDeploymentOut]:
    """A device's deployment history, newest first (at most 20 per page)."""
    if page.per_page > _MAX_HISTORY_PAGE:
        raise BadRequest(f"invalid per_page query: must be at most {_MAX_HISTORY_PAGE}")
    views, total = await deployments.device_history(
        identity.tenant,
        id,
        status=request.query_params.get("status"),
        skip=page.skip,
        limit=page.per_page,
    )
    set_page_headers(request, response, page, total=total)
    return [DeviceDeploymentOut.of(v) for v in views]


@router.delete("/deployments/devices/{id}", status_code=204)
async def abort_device_deployments(
    id: str, identity: UserIdentity, deployments: DeploymentsAppDep
) -> Response:
    """Abort the device's unfinished deployments."""
    await deployments.abort_for_device(identity.tenant, id)
    return Response(status_code=204)


@router.delete("/deployments/devices/{id}/history", status_code=204)
async def delete_device_deployments_history(
    id: str, identity: UserIdentity, deployments: DeploymentsAppDep
) -> Response:
    """Forget the device's finished deployments."""
    await deployments.delete_device_history(identity.tenant, id)
    return Response(status_code=204)


@router.get("/deployments/{id}", response_model=DeploymentOut, response_model_exclude_none=True)
async def get_deployment(
    id: str, identity: UserIdentity, deployments: DeploymentsAppDep
) -> DeploymentOut:
    """Show one deployment."""
    return DeploymentOut.of(await deployments.get(identity.tenant, id))


@router.put("/deployments/{deployment_id}/status", status_code=204)
async def abort_deployment(
    deployment_id: str,
    body: AbortRequest,
    identity: UserIdentity,
    deployments: DeploymentsAppDep,
) -> Response:
    """Abort a deployment (`{"status": "aborted"}`; 422 once finished)."""
    if body.status != "aborted":
        raise BadRequest("Unexpected deployment status")
    await deployments.abort(identity.tenant, deployment_id, actor=Actor.of(identity))
    return Response(status_code=204)


@router.get("/deployments/{deployment_id}/statistics")
async def get_deployment_stats(
    deployment_id: str, identity: UserIdentity, deployments: DeploymentsAppDep
) -> dict[str, int]:
    """Per-status device counts of a deployment."""
    return stats_out(await deployments.statistics(identity.tenant, deployment_id))


@router.get(
    "/deployments/{deployment_id}/devices",
    response_model=list[DeviceWithImageOut],
    response_model_exclude_none=True,
)
async def get_device_statuses_for_deployment(
    deployment_id: str, identity: UserIdentity, deployments: DeploymentsAppDep
) -> list[DeviceWithImageOut]:
    """Every device that asked for this deployment so far, with its status."""
    items, _ = await deployments.device_deployments(identity.tenant, deployment_id)
    return [DeviceWithImageOut.of(dd) for dd in items]


@router.get(
    "/deployments/{deployment_id}/devices/list",
    response_model=list[DeviceWithImageOut],
    response_model_exclude_none=True,
)
async def get_devices_list_for_deployment(
    deployment_id: str,
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    deployments: DeploymentsAppDep,
) -> list[DeviceWithImageOut]:
    """The devices of a deployment a page at a time (status filter)."""
    items, total = await deployments.device_deployments(
        identity.tenant,
        deployment_id,
        status=request.query_params.get("status"),
        skip=page.skip,
        limit=page.per_page,
    )
    set_page_headers(request, response, page, total=total)
    return [DeviceWithImageOut.of(dd) for dd in items]


@router.get("/deployments/{id}/device_list")
async def get_deployment_device_list(
    id: str, identity: UserIdentity, deployments: DeploymentsAppDep
) -> list[str]:
    """The ids of the devices a deployment targets."""
    return await deployments.device_ids(identity.tenant, id)


@router.get("/deployments/{deployment_id}/devices/{device_id}/log")
async def get_deployment_log_for_device(
    deployment_id: str, device_id: str, identity: UserIdentity, deployments: DeploymentsAppDep
) -> PlainTextResponse:
    """A device's deployment log as text."""
    messages = await deployments.log(identity.tenant, deployment_id, device_id)
    text = "".join(f"{_go_time(m.timestamp)} {m.level}: {m.message}\n" for m in messages)
    return PlainTextResponse(text)
