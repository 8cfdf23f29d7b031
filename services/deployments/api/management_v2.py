"""Management API v2 (`/api/management/v2/deployments`) and v1alpha1 (software)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, Response

from common.core.audit import Actor
from common.core.errors import BadRequest
from common.web.identity import UserIdentity
from common.web.paging import PageDep, set_page_headers
from services.deployments.api.deps import (
    ArtifactsAppDep,
    DeploymentsAppDep,
    ReleasesAppDep,
)
from services.deployments.api.queries import (
    artifact_filter_v2,
    deployment_filter,
    release_filter,
    release_sort,
)
from services.deployments.api.schemas import (
    ArtifactOut,
    DeploymentOut,
    ReleaseNotesRequest,
    ReleaseV2Out,
    SoftwareOut,
)
from services.deployments.store import ReleaseFilter, TextMatch

__all__ = ["PREFIX_V1ALPHA1", "PREFIX_V2", "router_v1alpha1", "router_v2"]

PREFIX_V2: Final = "/api/management/v2/deployments"
PREFIX_V1ALPHA1: Final = "/api/management/v1alpha1/deployments"
_MAX_NAMES: Final = 100

router_v2 = APIRouter(prefix=PREFIX_V2, tags=["management"])
router_v1alpha1 = APIRouter(prefix=PREFIX_V1ALPHA1, tags=["management"])


@router_v2.get("/deployments", response_model=list[DeploymentOut], response_model_exclude_none=True)
async def lookup_deployment_v2(
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    deployments: DeploymentsAppDep,
) -> list[DeploymentOut]:
    """List deployments (repeated id/name, status, type, created_before/after, sort)."""
    query = request.query_params
    id_scope = query.get("id_scope") or None
    if id_scope is not None and id_scope not in ("inventory", "identity"):
        raise BadRequest(f"invalid id_scope {id_scope!r}")
    items, total = await deployments.search_v2(
        identity.tenant,
        deployment_filter(query, v2=True),
        skip=page.skip,
        limit=page.per_page,
        id_attribute=query.get("id_attribute") or None,
        id_scope=id_scope,
    )
    set_page_headers(request, response, page, total=total)
    return [DeploymentOut.of(d) for d in items]


@router_v2.get("/artifacts", response_model=list[ArtifactOut], response_model_exclude_none=True)
async def list_images_v2(
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    artifacts: ArtifactsAppDep,
) -> list[ArtifactOut]:
    """List artifacts by name: exact names (repeatable) or one `prefix*`; paged."""
    items, total = await artifacts.search(
        identity.tenant,
        artifact_filter_v2(request.query_params),
        skip=page.skip,
        limit=page.per_page,
    )
    set_page_headers(request, response, page, total=total)
    return [ArtifactOut.of(a) for a in items]


@router_v2.get(
    "/deployments/releases",
    response_model=list[ReleaseV2Out],
    response_model_exclude_none=True,
)
async def list_releases_v2(
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    releases: ReleasesAppDep,
) -> list[ReleaseV2Out]:
    """List releases (name, tag, update_type filters; sort; paged)."""
    views, total = await releases.search(
        identity.tenant,
        release_filter(request.query_params, v2=True),
        skip=page.skip,
        limit=page.per_page,
        sort=release_sort(request.query_params),
    )
    set_page_headers(request, response, page, total=total)
    return [ReleaseV2Out.of(v) for v in views]


@router_v2.delete("/deployments/releases", status_code=204)
async def delete_releases(
    request: Request, identity: UserIdentity, releases: ReleasesAppDep
) -> Response:
    """Delete releases and their artifacts (409 while an active deployment uses one)."""
    await releases.delete(identity.tenant, request.query_params.getlist("name"))
    return Response(status_code=204)


@router_v2.get(
    "/deployments/releases/{release_name}",
    response_model=ReleaseV2Out,
    response_model_exclude_none=True,
)
async def get_release(
    release_name: str, identity: UserIdentity, releases: ReleasesAppDep
) -> ReleaseV2Out:
    """Show one release with its artifacts."""
    return ReleaseV2Out.of(await releases.get(identity.tenant, release_name))


@router_v2.patch("/deployments/releases/{release_name}", status_code=204)
async def patch_release(
    release_name: str,
    body: ReleaseNotesRequest,
    identity: UserIdentity,
    releases: ReleasesAppDep,
) -> Response:
    """Update a release's notes (at most 1024 characters)."""
    await releases.update_notes(
        identity.tenant, release_name, notes=body.notes, actor=Actor.of(identity)
    )
    return Response(status_code=204)


@router_v2.put("/deployments/releases/{release_name}/tags", status_code=204)
async def put_release_tags(
    release_name: str,
    body: list[object],
    identity: UserIdentity,
    releases: ReleasesAppDep,
) -> Response:
    """Replace a release's tags (lower-cased, de-duplicated, at most 20)."""
    await releases.replace_tags(identity.tenant, release_name, tags=body, actor=Actor.of(identity))
    return Response(status_code=204)


@router_v2.get("/releases/all/tags")
async def get_release_tag_keys(identity: UserIdentity, releases: ReleasesAppDep) -> list[str]:
    """Every tag used by a release."""
    return await releases.tags(identity.tenant)


@router_v2.get("/releases/all/types")
async def get_releases_update_types(identity: UserIdentity, releases: ReleasesAppDep) -> list[str]:
    """Every update type among the artifacts."""
    return await releases.update_types(identity.tenant)


def _software_filter(request: Request) -> ReleaseFilter | None:
    query = request.query_params
    names = [n for n in query.getlist("name") if n]
    prefix = query.get("name_prefix") or ""
    if names and prefix:
        raise BadRequest("name and name_prefix are mutually exclusive")
    if len(names) > _MAX_NAMES:
        raise BadRequest(f"at most {_MAX_NAMES} names may be given")
    kind = query.get("kind") or None
    if kind not in (None, "release", "manifest"):
        raise BadRequest(f"invalid kind {kind!r}")
    if kind == "manifest":
        # The open-source server keeps no manifests.
        return None
    matches = [TextMatch(n) for n in names] or ([TextMatch(prefix, "prefix")] if prefix else [])
    return ReleaseFilter(
        names=matches,
        update_type=query.get("update_type") or None,
        tags=[t.lower() for t in query.getlist("tag") if t],
    )


@router_v1alpha1.get(
    "/software", response_model=list[SoftwareOut], response_model_exclude_none=True
)
async def get_software(
    request: Request,
    response: Response,
    identity: UserIdentity,
    page: PageDep,
    releases: ReleasesAppDep,
) -> list[SoftwareOut]:
    """List software (releases) with filters, sorting and paging."""
    filter_ = _software_filter(request)
    sort = release_sort(request.query_params)
    if sort[0] == "artifacts_count":
        raise BadRequest("invalid sort parameter")
    if filter_ is None:
        set_page_headers(request, response, page, total=0)
        return []
    views, total = await releases.search(
        identity.tenant, filter_, skip=page.skip, limit=page.per_page, sort=sort
    )
    set_page_headers(request, response, page, total=total)
    return [SoftwareOut.of(v) for v in views]


@router_v1alpha1.get("/software/tags")
async def list_software_tags(
    request: Request, identity: UserIdentity, releases: ReleasesAppDep
) -> list[str]:
    """Every tag used by software (of a kind)."""
    kind = request.query_params.get("kind") or None
    if kind not in (None, "release", "manifest"):
        raise BadRequest(f"invalid kind {kind!r}")
    if kind == "manifest":
        return []
    return await releases.tags(identity.tenant)
