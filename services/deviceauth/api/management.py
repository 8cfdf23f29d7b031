"""The management API v2 of deviceauth (devices, auth sets, tokens, limits)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query, Request, Response

from common.core.audit import Actor
from common.core.errors import Conflict
from common.web.identity import UserIdentity
from common.web.paging import PageDep, set_page_headers
from services.deviceauth.api.deps import DevAuthAppDep
from services.deviceauth.api.schemas import (
    CountOut,
    DeviceFilter,
    DeviceOut,
    LimitBody,
    PreAuthIn,
    StatusBody,
)
from services.deviceauth.app.errors import DeviceExists

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v2/devauth"

router = APIRouter(prefix=PREFIX, tags=["management"])

StatusQuery = Annotated[list[str] | None, Query(alias="status")]
IdQuery = Annotated[list[str] | None, Query(alias="id")]


@router.get("/devices/count")
async def get_devices_count(
    identity: UserIdentity, devauth: DevAuthAppDep, status: str | None = None
) -> CountOut:
    """Count devices, optionally of one status."""
    return CountOut(count=await devauth.count_devices(identity.tenant, status=status))


@router.get("/devices")
async def get_devices(
    request: Request,
    response: Response,
    identity: UserIdentity,
    devauth: DevAuthAppDep,
    page: PageDep,
    status: StatusQuery = None,
    ids: IdQuery = None,
) -> list[DeviceOut]:
    """List devices (by status, then id) with their auth sets; filter by status and ids."""
    devices, has_next = await devauth.list_devices(
        identity.tenant, statuses=status or [], ids=ids or [], page=page
    )
    set_page_headers(request, response, page, has_next=has_next)
    return [DeviceOut.of(d) for d in devices]


@router.post("/devices", status_code=201, response_class=Response)
async def preauthorize_device(
    body: PreAuthIn, identity: UserIdentity, devauth: DevAuthAppDep
) -> Response:
    """Preauthorize an identity and key: the device is accepted on its first request."""
    try:
        device_id = await devauth.preauthorize(
            identity.tenant,
            identity_data=body.identity_data,
            pubkey=body.pubkey,
            force=body.force,
            actor=Actor.of(identity),
        )
    except DeviceExists as exc:
        raise Conflict(exc.message, body=DeviceOut.of(exc.device).model_dump(mode="json")) from None
    return Response(status_code=201, headers={"Location": f"devices/{device_id}"})


@router.post("/devices/search")
async def search_devices(
    request: Request,
    response: Response,
    identity: UserIdentity,
    devauth: DevAuthAppDep,
    page: PageDep,
) -> list[DeviceOut]:
    """Search devices by statuses and ids given in the body (a string or a list each)."""
    search = DeviceFilter.from_body(request.headers.get("content-type", ""), await request.body())
    devices, has_next = await devauth.list_devices(
        identity.tenant, statuses=search.statuses, ids=search.ids, page=page
    )
    set_page_headers(request, response, page, has_next=has_next)
    return [DeviceOut.of(d) for d in devices]


@router.get("/devices/{device_id}")
async def get_device(device_id: str, identity: UserIdentity, devauth: DevAuthAppDep) -> DeviceOut:
    """Get one device with its auth sets."""
    return DeviceOut.of(await devauth.get_device(identity.tenant, device_id))


@router.delete("/devices/{device_id}", status_code=204, response_class=Response)
async def decommission_device(
    device_id: str, identity: UserIdentity, devauth: DevAuthAppDep
) -> None:
    """Decommission a device: it loses access at once and every service forgets it."""
    await devauth.decommission(identity.tenant, device_id, actor=Actor.of(identity))


@router.delete("/devices/{device_id}/auth/{auth_id}", status_code=204, response_class=Response)
async def delete_device_auth_set(
    device_id: str, auth_id: str, identity: UserIdentity, devauth: DevAuthAppDep
) -> None:
    """Dismiss an auth set (a last preauthorized one removes the device)."""
    await devauth.delete_auth_set(identity.tenant, device_id, auth_id, actor=Actor.of(identity))


@router.put("/devices/{device_id}/auth/{auth_id}/status", status_code=204, response_class=Response)
async def update_device_status(
    device_id: str, auth_id: str, body: StatusBody, identity: UserIdentity, devauth: DevAuthAppDep
) -> None:
    """Accept, reject or reset (pending) an auth set of a device."""
    await devauth.set_auth_set_status(
        identity.tenant, device_id, auth_id, status=body.status, actor=Actor.of(identity)
    )


@router.get("/devices/{device_id}/auth/{auth_id}/status")
async def get_auth_set_status(
    device_id: str, auth_id: str, identity: UserIdentity, devauth: DevAuthAppDep
) -> StatusBody:
    """Get the status of an auth set."""
    status = await devauth.get_auth_set_status(identity.tenant, device_id, auth_id)
    return StatusBody(status=status.value)


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
async def delete_token(token_id: str, identity: UserIdentity, devauth: DevAuthAppDep) -> None:
    """Revoke a device token by its id (`jti`)."""
    await devauth.revoke_token(identity.tenant, token_id)


@router.get("/limits/{name}")
async def get_limit(name: str, identity: UserIdentity, devauth: DevAuthAppDep) -> LimitBody:
    """Get a limit, e.g. the maximum number of accepted devices (0 = unlimited)."""
    return LimitBody(limit=await devauth.get_limit(identity.tenant, name))
