"""Internal API for peers and the gateway: token verification, tenants' users, revocation."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Header, Query, Response

from common.core.errors import BadRequest
from common.web.routing import TENANT
from common.web.tokenissuer import token_issuer_router
from services.useradm.api.deps import (
    AuthAppDep,
    JsonBody,
    PresentedToken,
    UserFilterDep,
    UsersAppDep,
    token_issuer,
)
from services.useradm.api.schemas import TenantNewIn, UserNewInternalIn, UserOut

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/internal/v1/useradm"

router = APIRouter(prefix=PREFIX, tags=["internal"])
# The keys that verify user tokens and the revocation feed, read by the gateway.
router.include_router(token_issuer_router("/tokens", token_issuer))

ForwardedUri = Annotated[str, Header(alias="X-Forwarded-Uri")]
ForwardedMethod = Annotated[str, Header(alias="X-Forwarded-Method")]


@router.get("/auth/verify", status_code=200)
@router.post("/auth/verify", status_code=200)
async def verify_token(
    token: PresentedToken,
    auth: AuthAppDep,
    forwarded_uri: ForwardedUri = "",
    forwarded_method: ForwardedMethod = "",
) -> Response:
    """Check a user token for the request the gateway describes: 200 when it may pass."""
    await auth.verify(token, forwarded_uri=forwarded_uri, forwarded_method=forwarded_method)
    return Response(status_code=200)


@router.post("/tenants", status_code=201, dependencies=[JsonBody])
async def create_tenant(body: TenantNewIn, users: UsersAppDep) -> Response:
    """Prepare for a new tenant."""
    await users.create_tenant(body.tenant_id)
    return Response(status_code=201)


@router.get(f"/tenants/{TENANT}/users", response_model_exclude_none=True)
async def list_tenant_users(
    tenant_id: str, users: UsersAppDep, filter_: UserFilterDep
) -> list[UserOut]:
    """List a tenant's users, optionally filtered by id, email and timestamps."""
    return [UserOut.of(u) for u in await users.list_users(tenant_id, filter_)]


@router.post(f"/tenants/{TENANT}/users", status_code=201, dependencies=[JsonBody])
async def create_tenant_user(
    tenant_id: str, body: UserNewInternalIn, users: UsersAppDep
) -> Response:
    """Create a user in a tenant (422 when the email is taken)."""
    await users.create_user(
        tenant_id, email=body.email, password=body.password, password_hash=body.password_hash
    )
    return Response(status_code=201)


@router.delete(f"/tenants/{TENANT}/users/{{user_id}}", status_code=204)
async def delete_tenant_user(tenant_id: str, user_id: str, users: UsersAppDep) -> Response:
    """Remove a user of a tenant with their tokens."""
    await users.delete_user(tenant_id, user_id)
    return Response(status_code=204)


@router.delete("/tokens", status_code=204)
async def revoke_tokens(
    auth: AuthAppDep,
    tenant_id: Annotated[str | None, Query()] = None,
    user_id: Annotated[str | None, Query()] = None,
) -> Response:
    """Revoke every token of a tenant, or of one of its users."""
    if tenant_id is None:
        raise BadRequest("tenant_id must be provided")
    # NOTE: Mender refuses an empty tenant_id; here it names the default tenant of a
    # single-tenant installation, as the empty path segment of the other routes does.
    await auth.revoke_tokens(tenant_id, user_id=user_id)
    return Response(status_code=204)
