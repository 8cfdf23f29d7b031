"""Devices API: a device reports alerts, the monitor checks it runs, and telemetry."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response

from services.devicemonitor.api.deps import (
    AlertsAppDep,
    DeviceIdentity,
    JsonBody,
    TelemetryAppDep,
)

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/devices/v1/devicemonitor"

router = APIRouter(prefix=PREFIX, tags=["devices"])


@router.post("/alert", status_code=204)
async def device_alert(identity: DeviceIdentity, alerts: AlertsAppDep, body: JsonBody) -> Response:
    """Record the alerts the calling device raised (one alert or an array, all or none)."""
    await alerts.raise_alerts(identity.tenant, identity.subject, body)
    return Response(status_code=204)


@router.post("/config", status_code=204)
async def set_monitor_configuration(
    identity: DeviceIdentity, alerts: AlertsAppDep, body: JsonBody
) -> Response:
    """Replace the monitor checks the calling device reports it runs."""
    await alerts.set_configuration(identity.tenant, identity.subject, body)
    return Response(status_code=204)


@router.post("/telemetry", status_code=204)
async def report_telemetry(
    identity: DeviceIdentity, telemetry: TelemetryAppDep, body: JsonBody
) -> Response:
    """Record the calling device's telemetry samples (one or an array, all or none)."""
    await telemetry.report(identity.tenant, identity.subject, body)
    return Response(status_code=204)
