"""Wire-only documents of useradm's APIs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from services.useradm.app.organization import PERMIT_ALL, Organization, Role
from services.useradm.models import StoredToken, User

__all__ = [
    "LoginOptionsIn",
    "OwnUserUpdateV2In",
    "PersonalAccessTokenOut",
    "RoleOut",
    "TenantNewIn",
    "TenantOut",
    "TokenRequestIn",
    "UserNewIn",
    "UserNewInternalIn",
    "UserOut",
    "UserUpdateIn",
]


class _Strict(BaseModel):
    """A request body whose unknown fields are refused with 400."""

    model_config = ConfigDict(extra="forbid")


class LoginOptionsIn(BaseModel):
    """Optional login body; the web UI also sends `token2fa`, and unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    no_expiry: StrictBool = False
    token2fa: StrictStr | None = None


class UserNewIn(_Strict):
    """A new user of the caller's tenant."""

    email: StrictStr
    password: StrictStr


class UserUpdateIn(_Strict):
    """Changes of a user; changing one's own email or password takes `current_password`."""

    email: StrictStr | None = None
    password: StrictStr | None = None
    current_password: StrictStr | None = None


class OwnUserUpdateV2In(_Strict):
    """A change of the caller's own password."""

    password: StrictStr | None = None
    current_password: StrictStr | None = None


class UserNewInternalIn(_Strict):
    """A user created by a peer: a password, or the bcrypt hash of one."""

    email: StrictStr
    password: StrictStr | None = None
    password_hash: StrictStr | None = None
    # Deprecated by Mender (propagation to tenantadm); accepted and ignored.
    propagate: StrictBool | None = None


class TenantNewIn(_Strict):
    """A tenant to prepare for."""

    tenant_id: StrictStr


class TokenRequestIn(_Strict):
    """A personal access token request; `expires_in` 0 (the default) never expires."""

    name: StrictStr
    expires_in: StrictInt = 0


class UserOut(BaseModel):
    """A user as rendered (never with the password hash)."""

    id: str
    email: str
    created_ts: datetime
    updated_ts: datetime
    login_ts: datetime | None = None
    # Until roles can be defined, every user holds the one that permits everything.
    roles: list[str] = [PERMIT_ALL]

    @classmethod
    def of(cls, user: User) -> UserOut:
        """Render a domain user."""
        return cls(
            id=user.id,
            email=user.email,
            created_ts=user.created_ts,
            updated_ts=user.updated_ts,
            login_ts=user.login_ts,
        )


class PermissionObjectOut(BaseModel):
    """What a permission applies to."""

    type: str
    value: str


class PermissionOut(BaseModel):
    """One permission of a role."""

    action: str
    object: PermissionObjectOut


class RoleOut(BaseModel):
    """A role as Mender lists it."""

    name: str
    description: str
    permissions: list[PermissionOut]

    @classmethod
    def of(cls, role: Role) -> RoleOut:
        """Render a role."""
        return cls(
            name=role.name,
            description=role.description,
            permissions=[
                PermissionOut(action=action, object=PermissionObjectOut(type=kind, value=value))
                for action, kind, value in role.permissions
            ],
        )


class AddonOut(BaseModel):
    """An add-on of an organization."""

    name: str
    enabled: bool


class TenantOut(BaseModel):
    """The caller's organization, as Mender's tenantadm shows it."""

    id: str
    name: str
    plan: str
    trial: bool
    status: str
    addons: list[AddonOut]

    @classmethod
    def of(cls, org: Organization) -> TenantOut:
        """Render an organization."""
        return cls(
            id=org.id,
            name=org.name,
            plan=org.plan,
            trial=org.trial,
            status="active",
            addons=[AddonOut(**addon) for addon in org.addon_list()],
        )


class PersonalAccessTokenOut(BaseModel):
    """A personal access token as listed: never the token itself."""

    id: str
    name: str
    last_used: datetime | None = None
    expiration_date: datetime | None = None
    created_ts: datetime

    @classmethod
    def of(cls, token: StoredToken) -> PersonalAccessTokenOut:
        """Render a stored personal access token."""
        return cls(
            id=token.id,
            name=token.name or "",
            last_used=token.last_used,
            expiration_date=token.expires_at,
            created_ts=token.issued_at,
        )
