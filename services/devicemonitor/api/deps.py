"""Dependencies of the routes: what the lifespan built, handed over typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, Depends

from common.web.app import services_dependency
from common.web.identity import DeviceIdentity, UserIdentity
from services.devicemonitor.app import AlertsApp, TelemetryApp
from services.devicemonitor.config import Settings

__all__ = [
    "AlertsAppDep",
    "DeviceIdentity",
    "JsonBody",
    "Services",
    "ServicesDep",
    "SettingsDep",
    "TelemetryAppDep",
    "UserIdentity",
]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases (on their stores)."""

    settings: Settings
    alerts: AlertsApp
    telemetry: TelemetryApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _alerts(services: ServicesDep) -> AlertsApp:
    return services.alerts


AlertsAppDep = Annotated[AlertsApp, Depends(_alerts)]


def _telemetry(services: ServicesDep) -> TelemetryApp:
    return services.telemetry


TelemetryAppDep = Annotated[TelemetryApp, Depends(_telemetry)]


def _settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(_settings)]

# A JSON body as sent; the use-cases check it and say precisely what is wrong.
JsonBody = Annotated[Any, Body()]
