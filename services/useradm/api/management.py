"""Management APIs: login and logout, users, settings, personal access tokens, roles, plans."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse

from common.core.audit import Actor
from common.web.paging import PageDep
from services.useradm.api.deps import (
    AuthAppDep,
    BasicCredentials,
    IfMatch,
    JsonBody,
    LoginOptions,
    PlansAppDep,
    SettingsAppDep,
    UserFilterDep,
    UserIdentity,
    UsersAppDep,
)
from services.useradm.api.schemas import (
    OwnUserUpdateV2In,
    PersonalAccessTokenOut,
    RoleOut,
    TokenRequestIn,
    UserNewIn,
    UserOut,
    UserUpdateIn,
)
from services.useradm.app.organization import PERMIT_ALL_ROLE
from services.useradm.models import Plan, PlanBinding

__all__ = ["PREFIX_V1", "PREFIX_V2", "management_v1", "management_v2"]

PREFIX_V1: Final = "/api/management/v1/useradm"
PREFIX_V2: Final = "/api/management/v2/useradm"
_JWT_MEDIA_TYPE: Final = "application/jwt"

management_v1 = APIRouter(prefix=PREFIX_V1, tags=["management"])
management_v2 = APIRouter(prefix=PREFIX_V2, tags=["management"])

SettingsBody = Annotated[dict[str, Any], Body()]


def _jwt(token: str) -> Response:
    # The web UI compares the content type for equality: no charset parameter.
    return Response(content=token, media_type=_JWT_MEDIA_TYPE)


def _token_id(identity: UserIdentity) -> str | None:
    jti = identity.claims.get("jti")
    return jti if isinstance(jti, str) else None


# -- login, logout --------------------------------------------------------------------------


@management_v1.post("/auth/login", response_class=Response)
async def login(credentials: BasicCredentials, options: LoginOptions, auth: AuthAppDep) -> Response:
    """Log in with HTTP Basic credentials; the answer is the new token itself."""
    token = await auth.login(
        email=credentials.email, password=credentials.password, no_expiry=options.no_expiry
    )
    return _jwt(token)


@management_v1.post("/auth/logout", status_code=202, dependencies=[JsonBody])
async def logout(identity: UserIdentity, auth: AuthAppDep) -> Response:
    """End the session of the presented token; it stops working at once."""
    await auth.logout(identity.tenant, user_id=identity.subject, token_id=_token_id(identity))
    return Response(status_code=202)


# -- users ----------------------------------------------------------------------------------


@management_v1.get("/users", response_model_exclude_none=True)
async def list_users(
    identity: UserIdentity, users: UsersAppDep, filter_: UserFilterDep
) -> list[UserOut]:
    """List the tenant's users, optionally filtered by id, email and timestamps."""
    return [UserOut.of(u) for u in await users.list_users(identity.tenant, filter_)]


@management_v1.post("/users", status_code=201, dependencies=[JsonBody])
async def create_user(body: UserNewIn, identity: UserIdentity, users: UsersAppDep) -> Response:
    """Create a user in the caller's tenant."""
    user = await users.create_user(
        identity.tenant, email=body.email, password=body.password, actor=Actor.of(identity)
    )
    return Response(status_code=201, headers={"Location": f"users/{user.id}"})


@management_v1.get("/users/me", response_model_exclude_none=True)
async def get_own_user(identity: UserIdentity, users: UsersAppDep) -> UserOut:
    """Return the caller's own account."""
    return UserOut.of(await users.get_user(identity.tenant, identity.subject))


@management_v1.put("/users/me", status_code=204, dependencies=[JsonBody])
async def update_own_user(
    body: UserUpdateIn, identity: UserIdentity, users: UsersAppDep
) -> Response:
    """Change the caller's email or password (with the current password)."""
    return await update_user(identity.subject, body, identity, users)


@management_v1.get("/users/{id}", response_model_exclude_none=True)
async def get_user(id: str, identity: UserIdentity, users: UsersAppDep) -> UserOut:
    """Return one user of the tenant (`me`: the caller)."""
    return UserOut.of(await users.get_user(identity.tenant, id, caller_id=identity.subject))


@management_v1.put("/users/{id}", status_code=204, dependencies=[JsonBody])
async def update_user(
    id: str, body: UserUpdateIn, identity: UserIdentity, users: UsersAppDep
) -> Response:
    """Change a user's email, or one's own password (`me`: the caller)."""
    await users.update_user(
        identity.tenant,
        id,
        caller_id=identity.subject,
        caller_token=_token_id(identity),
        email=body.email,
        password=body.password,
        current_password=body.current_password,
        actor=Actor.of(identity),
    )
    return Response(status_code=204)


@management_v1.delete("/users/{id}", status_code=204)
async def delete_user(id: str, identity: UserIdentity, users: UsersAppDep) -> Response:
    """Remove a user; their tokens stop working at once."""
    await users.delete_user(
        identity.tenant, id, caller_id=identity.subject, actor=Actor.of(identity)
    )
    return Response(status_code=204)


@management_v2.put("/users/me", status_code=204, dependencies=[JsonBody])
async def update_own_password(
    body: OwnUserUpdateV2In, identity: UserIdentity, users: UsersAppDep
) -> Response:
    """Change the caller's own password (with the current password)."""
    await users.update_user(
        identity.tenant,
        identity.subject,
        caller_id=identity.subject,
        caller_token=_token_id(identity),
        password=body.password,
        current_password=body.current_password,
        actor=Actor.of(identity),
    )
    return Response(status_code=204)


# -- settings -------------------------------------------------------------------------------


async def _get_settings(settings: SettingsAppDep, tenant: str, user_id: str | None) -> Response:
    stored = await settings.get(tenant, user_id=user_id)
    if stored is None:
        return JSONResponse({})
    return JSONResponse(stored.values, headers={"ETag": stored.etag})


@management_v1.get("/settings")
async def get_settings(identity: UserIdentity, settings: SettingsAppDep) -> Response:
    """Return the tenant's UI settings, with their ETag."""
    return await _get_settings(settings, identity.tenant, None)


@management_v1.post("/settings", status_code=201, dependencies=[JsonBody])
async def save_settings(
    values: SettingsBody,
    identity: UserIdentity,
    settings: SettingsAppDep,
    if_match: IfMatch = None,
) -> Response:
    """Replace the tenant's UI settings (412 when `If-Match` is not their ETag)."""
    etag = await settings.save(identity.tenant, values, if_match=if_match)
    return Response(status_code=201, headers={"ETag": etag})


@management_v1.get("/settings/me")
async def get_own_settings(identity: UserIdentity, settings: SettingsAppDep) -> Response:
    """Return the caller's own UI settings, with their ETag."""
    return await _get_settings(settings, identity.tenant, identity.subject)


@management_v1.post("/settings/me", status_code=201, dependencies=[JsonBody])
async def save_own_settings(
    values: SettingsBody,
    identity: UserIdentity,
    settings: SettingsAppDep,
    if_match: IfMatch = None,
) -> Response:
    """Replace the caller's own UI settings (412 when `If-Match` is not their ETag)."""
    etag = await settings.save(identity.tenant, values, user_id=identity.subject, if_match=if_match)
    return Response(status_code=201, headers={"ETag": etag})


# -- personal access tokens -----------------------------------------------------------------


@management_v1.get("/settings/tokens", response_model_exclude_none=True)
async def list_personal_tokens(
    identity: UserIdentity, auth: AuthAppDep
) -> list[PersonalAccessTokenOut]:
    """List the caller's personal access tokens (never the tokens themselves)."""
    tokens = await auth.list_personal_tokens(identity.tenant, identity.subject)
    return [PersonalAccessTokenOut.of(t) for t in tokens]


@management_v1.post("/settings/tokens", response_class=Response, dependencies=[JsonBody])
async def create_personal_token(
    body: TokenRequestIn, identity: UserIdentity, auth: AuthAppDep
) -> Response:
    """Create a named personal access token; the answer is the token itself."""
    token = await auth.issue_personal_token(
        identity.tenant,
        identity.subject,
        name=body.name,
        expires_in=body.expires_in,
        actor=Actor.of(identity),
    )
    return _jwt(token)


@management_v1.delete("/settings/tokens/{id}", status_code=204)
async def revoke_personal_token(id: str, identity: UserIdentity, auth: AuthAppDep) -> Response:
    """Revoke one of the caller's tokens; it stops working at once."""
    await auth.revoke_token(identity.tenant, identity.subject, id, actor=Actor.of(identity))
    return Response(status_code=204)


# -- roles ----------------------------------------------------------------------------------


@management_v1.get("/roles")
async def list_roles(_identity: UserIdentity) -> list[RoleOut]:
    """The roles users may hold: the one that permits everything, held by every user."""
    return [RoleOut.of(PERMIT_ALL_ROLE)]


# -- plans ----------------------------------------------------------------------------------


@management_v1.get("/plans")
async def list_plans(_identity: UserIdentity, plans: PlansAppDep, page: PageDep) -> list[Plan]:
    """List the available subscription plans."""
    return plans.list_plans(page)


@management_v1.get("/plan_binding")
async def get_plan_binding(_identity: UserIdentity, plans: PlansAppDep) -> PlanBinding:
    """Return the plan of the caller's tenant."""
    return plans.plan_binding()
