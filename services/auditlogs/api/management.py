"""Management API: the tenant's audit trail, a page at a time or as a CSV file."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from common.web.paging import PageDep, set_page_headers
from services.auditlogs.api.deps import AuditLogsAppDep, LogFilterDep, UserIdentity
from services.auditlogs.app import parse_limit
from services.auditlogs.models import AuditLog

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v1/auditlogs"

router = APIRouter(prefix=PREFIX, tags=["management"])


@router.get(
    "/logs", response_model=list[AuditLog], response_model_exclude_none=True, status_code=200
)
async def list_logs(
    request: Request,
    response: Response,
    identity: UserIdentity,
    logs: AuditLogsAppDep,
    filter_: LogFilterDep,
    page: PageDep,
) -> list[AuditLog]:
    """List the events that match the filters, newest first unless `sort=asc`."""
    found, total = await logs.list_logs(identity.tenant, filter_, page)
    set_page_headers(request, response, page, total=total)
    return found


@router.get("/logs/export", response_class=StreamingResponse, status_code=200)
async def export_logs(
    identity: UserIdentity,
    logs: AuditLogsAppDep,
    filter_: LogFilterDep,
    limit: Annotated[str | None, Query(max_length=32)] = None,
) -> StreamingResponse:
    """Export the events that match the filters as CSV, streamed (at most `limit`)."""
    rows = logs.export(identity.tenant, filter_, limit=parse_limit(limit))
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="auditlogs.csv"'},
    )
