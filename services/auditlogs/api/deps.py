"""Dependencies of the routes: what the lifespan built, and the filters of a query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query

from common.core.outbox import IDEMPOTENCY_KEY_HEADER
from common.web.app import services_dependency
from common.web.identity import UserIdentity
from services.auditlogs.app import AuditLogsApp, parse_filter
from services.auditlogs.config import Settings
from services.auditlogs.models import LogFilter

__all__ = [
    "AuditLogsAppDep",
    "IdempotencyKey",
    "LogFilterDep",
    "Services",
    "ServicesDep",
    "UserIdentity",
]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases."""

    settings: Settings
    logs: AuditLogsApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _logs(services: ServicesDep) -> AuditLogsApp:
    return services.logs


AuditLogsAppDep = Annotated[AuditLogsApp, Depends(_logs)]

# The outbox relay names each effect; a redelivery carries the same key.
IdempotencyKey = Annotated[str | None, Header(alias=IDEMPOTENCY_KEY_HEADER, max_length=256)]

_Text = Annotated[str | None, Query(max_length=1024)]


def _filter(
    actor_id: _Text = None,
    actor_email: _Text = None,
    object_id: _Text = None,
    object_type: _Text = None,
    object_deployment_name: _Text = None,
    created_after: _Text = None,
    created_before: _Text = None,
    sort: _Text = None,
) -> LogFilter:
    return parse_filter(
        actor_id=actor_id,
        actor_email=actor_email,
        object_id=object_id,
        object_type=object_type,
        object_deployment_name=object_deployment_name,
        created_after=created_after,
        created_before=created_before,
        sort=sort,
    )


# The filters of the listing and the export, validated (400 with what is wrong).
LogFilterDep = Annotated[LogFilter, Depends(_filter)]
