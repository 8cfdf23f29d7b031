"""Dependency aliases shared by the deviceauth routers.

The lifespan builds one `Services` object; routes take its parts through the `…Dep` aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.web.app import services_dependency
from services.deviceauth.app import DevAuthApp, DeviceAuthApp
from services.deviceauth.config import Settings

__all__ = ["DevAuthAppDep", "DeviceAuthAppDep", "Services", "ServicesDep"]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases."""

    settings: Settings
    devauth: DevAuthApp
    device_auth: DeviceAuthApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _devauth(services: ServicesDep) -> DevAuthApp:
    return services.devauth


def _device_auth(services: ServicesDep) -> DeviceAuthApp:
    return services.device_auth


DevAuthAppDep = Annotated[DevAuthApp, Depends(_devauth)]
DeviceAuthAppDep = Annotated[DeviceAuthApp, Depends(_device_auth)]
