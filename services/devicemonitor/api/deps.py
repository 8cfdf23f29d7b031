"""Dependencies of the routes: what the lifespan built, handed over typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, Depends

from common.web.app import services_dependency
from common.web.identity import DeviceIdentity, UserIdentity
from services.devicemonitor.app import AlertsApp
from services.devicemonitor.config import Settings

__all__ = [
    "AlertsAppDep",
    "DeviceIdentity",
    "JsonBody",
    "Services",
    "ServicesDep",
    "UserIdentity",
]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases (on their store)."""

    settings: Settings
    alerts: AlertsApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _alerts(services: ServicesDep) -> AlertsApp:
    return services.alerts


AlertsAppDep = Annotated[AlertsApp, Depends(_alerts)]

# A JSON body as sent; the use-cases check it and say precisely what is wrong.
JsonBody = Annotated[Any, Body()]
