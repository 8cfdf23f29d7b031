"""Management API: a device's alerts, its open issues and its monitor configuration."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime

from common.web.paging import PageDep, set_page_headers
from services.devicemonitor.api.deps import AlertsAppDep, UserIdentity
from services.devicemonitor.models import Alert, AlertQuery, MonitorConfiguration

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v1/devicemonitor"

router = APIRouter(prefix=PREFIX, tags=["management"])

_Time = Annotated[AwareDatetime | None, Query()]


@router.get("/devices/{device_id}/alerts", response_model_exclude_none=True)
async def list_device_alerts(
    device_id: str,
    request: Request,
    response: Response,
    identity: UserIdentity,
    alerts: AlertsAppDep,
    page: PageDep,
    issued_after: _Time = None,
    issued_before: _Time = None,
    sort_ascending: Annotated[bool, Query()] = False,
) -> list[Alert]:
    """A page of a device's alerts, newest first (`X-Total-Count` counts them all)."""
    query = AlertQuery(
        issued_after=issued_after, issued_before=issued_before, sort_ascending=sort_ascending
    )
    found, total = await alerts.device_alerts(identity.tenant, device_id, query, page)
    set_page_headers(request, response, page, total=total)
    return found


@router.get("/devices/{device_id}/alerts/latest", response_model_exclude_none=True)
async def list_latest_device_alerts(
    device_id: str,
    request: Request,
    response: Response,
    identity: UserIdentity,
    alerts: AlertsAppDep,
    page: PageDep,
) -> list[Alert]:
    """The device's open issues: per alert name, its latest alert while that is CRITICAL."""
    found, total = await alerts.latest_alerts(identity.tenant, device_id, page)
    set_page_headers(request, response, page, total=total)
    return found


@router.get("/devices/{device_id}/config")
async def get_device_monitor_configuration(
    device_id: str, identity: UserIdentity, alerts: AlertsAppDep
) -> list[MonitorConfiguration]:
    """The monitor checks the device last reported (empty before its first report)."""
    return await alerts.configuration(identity.tenant, device_id)
