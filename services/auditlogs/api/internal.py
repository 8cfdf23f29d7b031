"""Internal API (`/api/internal/v1/auditlogs`), for peer services only.

Every service queues its audit events in its outbox and delivers them here; a redelivery
(same `Idempotency-Key`) is stored once. Tenant deletion erases a tenant's trail.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response

from common.web.routing import TENANT
from services.auditlogs.api.deps import AuditLogsAppDep, IdempotencyKey
from services.auditlogs.models import AuditLog

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/internal/v1/auditlogs"

router = APIRouter(prefix=PREFIX, tags=["internal"])


@router.post(f"/tenants/{TENANT}/logs", status_code=201)
async def create_log(
    tenant_id: str, body: AuditLog, logs: AuditLogsAppDep, key: IdempotencyKey = None
) -> Response:
    """Record one audit event of a tenant (once per idempotency key)."""
    await logs.record(tenant_id, body, key=key)
    return Response(status_code=201)


# The tenant of a deletion may not be empty: `/tenants/` is no way to erase the default one.
@router.delete("/tenants/{tenant_id}", status_code=204)
async def delete_tenant(tenant_id: str, logs: AuditLogsAppDep) -> Response:
    """Delete every audit event of a tenant."""
    await logs.delete_tenant(tenant_id)
    return Response(status_code=204)
