"""Dependencies of the routes: what the lifespan built, handed over typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, Depends, Request

from common.identity import DeviceIdentity, UserIdentity
from services.deviceconfig.app import DeviceConfigApp

__all__ = [
    "ConfigurationBody",
    "DeviceConfigAppDep",
    "DeviceIdentity",
    "Services",
    "ServicesDep",
    "UserIdentity",
]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the use-cases, on their store and peer clients."""

    configurations: DeviceConfigApp


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


def _configurations(services: ServicesDep) -> DeviceConfigApp:
    return services.configurations


DeviceConfigAppDep = Annotated[DeviceConfigApp, Depends(_configurations)]

# A configuration as sent: a JSON object; its keys and values are checked by the use-cases.
ConfigurationBody = Annotated[dict[str, Any], Body()]
