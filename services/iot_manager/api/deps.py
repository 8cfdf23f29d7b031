"""Dependencies of the routes: the use-cases built by the lifespan, ids from the path."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Header

from common.core.errors import BadRequest
from common.core.outbox import IDEMPOTENCY_KEY_HEADER
from common.web.app import services_dependency
from common.web.identity import UserIdentity
from services.iot_manager.app import EventsApp, IntegrationsApp
from services.iot_manager.config import Settings

__all__ = [
    "EventsAppDep",
    "IdempotencyKey",
    "IntegrationId",
    "IntegrationsAppDep",
    "Services",
    "StateIntegrationId",
    "UserIdentity",
    "parse_integration_id",
]

_NOT_A_UUID: Final = "integration ID is not a valid UUID"


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases."""

    settings: Settings
    integrations: IntegrationsApp
    events: EventsApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _integrations(services: ServicesDep) -> IntegrationsApp:
    return services.integrations


def _events(services: ServicesDep) -> EventsApp:
    return services.events


IntegrationsAppDep = Annotated[IntegrationsApp, Depends(_integrations)]
EventsAppDep = Annotated[EventsApp, Depends(_events)]


def parse_integration_id(value: str, message: str = _NOT_A_UUID) -> str:
    """An integration id in its canonical form (BadRequest when it is not a UUID)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(message) from None


def _integration_id(integration_id: str) -> str:
    # NOTE: Mender words this one differently from the device-state routes.
    return parse_integration_id(integration_id, "integration ID must be a valid UUID")


def _state_integration_id(integration_id: str) -> str:
    return parse_integration_id(integration_id)


IntegrationId = Annotated[str, Depends(_integration_id)]
StateIntegrationId = Annotated[str, Depends(_state_integration_id)]
IdempotencyKey = Annotated[str | None, Header(alias=IDEMPOTENCY_KEY_HEADER)]
