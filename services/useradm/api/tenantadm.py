"""The caller's organization at Mender's tenantadm path, which the web UI's Enterprise mode
reads; Fleetport has no tenantadm service, so useradm answers it."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

from common.web.identity import UserIdentity
from services.useradm.api.schemas import TenantOut
from services.useradm.app.organization import organization_of

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v1/tenantadm"

router = APIRouter(prefix=PREFIX, tags=["management"])


@router.get("/user/tenant")
async def get_user_tenant(identity: UserIdentity) -> TenantOut:
    """The caller's organization: its plan and add-ons."""
    return TenantOut.of(organization_of(identity.tenant))
