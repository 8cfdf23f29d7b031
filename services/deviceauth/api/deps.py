"""Dependency aliases shared by the deviceauth routers.

The lifespan builds one `Services` object; routes take its parts through the `…Dep` aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.web.app import services_dependency
from services.deviceauth.app import DevAuthApp
from services.deviceauth.config import Settings

__all__ = ["DevAuthAppDep", "Services", "ServicesDep"]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases."""

    settings: Settings
    devauth: DevAuthApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _devauth(services: ServicesDep) -> DevAuthApp:
    return services.devauth


DevAuthAppDep = Annotated[DevAuthApp, Depends(_devauth)]
