"""Dependencies of the routes: what the lifespan built, handed over typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, Depends

from common.web.app import services_dependency
from common.web.identity import DeviceIdentity, UserIdentity
from services.deviceconfig.app import DeviceConfigApp
from services.deviceconfig.config import Settings

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
    """What the lifespan builds: the settings and the use-cases (on their store and peers)."""

    settings: Settings
    configurations: DeviceConfigApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _configurations(services: ServicesDep) -> DeviceConfigApp:
    return services.configurations


DeviceConfigAppDep = Annotated[DeviceConfigApp, Depends(_configurations)]

# A configuration as sent: a JSON object; its keys and values are checked by the use-cases.
ConfigurationBody = Annotated[dict[str, Any], Body()]
