"""Dependency aliases shared by the deviceauth routers.

The lifespan builds one `Services` object; routes take its parts through the `…Dep` aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from common.web.app import services_dependency, services_of
from common.web.tokenissuer import TokenIssuer
from services.deviceauth.app import DevAuthApp
from services.deviceauth.config import Settings

__all__ = ["DevAuthAppDep", "Services", "ServicesDep", "token_issuer"]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases."""

    settings: Settings
    devauth: DevAuthApp
    issuer: TokenIssuer


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _devauth(services: ServicesDep) -> DevAuthApp:
    return services.devauth


DevAuthAppDep = Annotated[DevAuthApp, Depends(_devauth)]


def token_issuer(request: Request) -> TokenIssuer:
    """The device tokens' keys and revocation feed (for the routes the gateway reads)."""
    return services_of(request.app, Services).issuer
