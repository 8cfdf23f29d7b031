"""Internal API (`/api/internal/v1/devicemonitor`), for peer services only.

inventory reads a device's open alerts here when it refreshes the device's `monitor`
attributes; a decommissioned device's alerts and configuration are deleted here.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response

from common.core.pages import MAX_PER_PAGE, Page
from common.web.routing import TENANT
from services.devicemonitor.api.deps import AlertsAppDep
from services.devicemonitor.models import Alert

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/internal/v1/devicemonitor"

router = APIRouter(prefix=PREFIX, tags=["internal"])


@router.get(
    f"/tenants/{TENANT}/devices/{{device_id}}/alerts/latest", response_model_exclude_none=True
)
async def internal_latest_device_alerts(
    tenant_id: str, device_id: str, alerts: AlertsAppDep
) -> list[Alert]:
    """The device's open issues (at most a page of the largest size)."""
    found, _ = await alerts.latest_alerts(tenant_id, device_id, Page(1, MAX_PER_PAGE))
    return found


@router.delete(f"/tenants/{TENANT}/devices/{{device_id}}", status_code=204)
async def delete_device(tenant_id: str, device_id: str, alerts: AlertsAppDep) -> Response:
    """Forget a decommissioned device: its alerts and its monitor configuration."""
    await alerts.forget_device(tenant_id, device_id)
    return Response(status_code=204)
