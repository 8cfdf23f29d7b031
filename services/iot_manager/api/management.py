"""Management API: integrations, device states and the event log (users only)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Query, Response

from common.core.audit import Actor
from common.web.paging import PageDep
from services.iot_manager.api.deps import (
    EventsAppDep,
    IntegrationId,
    IntegrationsAppDep,
    StateIntegrationId,
    UserIdentity,
    parse_integration_id,
)
from services.iot_manager.api.schemas import (
    DeviceStateIn,
    DeviceStateOut,
    EventOut,
    IntegrationIn,
    IntegrationOut,
)
from services.iot_manager.models import Credentials

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/management/v1/iot-manager"

router = APIRouter(prefix=PREFIX, tags=["management"])


@router.get("/integrations", response_model_exclude_none=True)
async def get_integrations(
    user: UserIdentity, page: PageDep, integrations: IntegrationsAppDep
) -> list[IntegrationOut]:
    """List the tenant's integrations (secrets masked)."""
    found = await integrations.list_integrations(user.tenant, page=page)
    return [IntegrationOut.of(i) for i in found]


@router.post("/integrations", status_code=201)
async def create_integration(
    user: UserIdentity, body: IntegrationIn, integrations: IntegrationsAppDep
) -> Response:
    """Register the tenant's integration (one per tenant)."""
    integration = await integrations.create_integration(
        user.tenant,
        provider=body.provider,
        credentials=body.credentials,
        description=body.description,
        actor=Actor.of(user),
    )
    location = f"{PREFIX}/integrations/{integration.id}"
    return Response(status_code=201, headers={"Location": location})


@router.get("/integrations/{integration_id}", response_model_exclude_none=True)
async def get_integration_by_id(
    user: UserIdentity, integration_id: IntegrationId, integrations: IntegrationsAppDep
) -> IntegrationOut:
    """One integration (secrets masked)."""
    return IntegrationOut.of(await integrations.get_integration(user.tenant, integration_id))


@router.delete("/integrations/{integration_id}", status_code=204)
async def remove_integration(
    user: UserIdentity, integration_id: IntegrationId, integrations: IntegrationsAppDep
) -> Response:
    """Remove an integration; a cloud one only when no device uses it."""
    await integrations.remove_integration(user.tenant, integration_id, actor=Actor.of(user))
    return Response(status_code=204)


@router.put("/integrations/{integration_id}/credentials", status_code=204)
async def set_integration_credentials(
    user: UserIdentity,
    integration_id: IntegrationId,
    credentials: Annotated[Credentials, Body()],
    integrations: IntegrationsAppDep,
) -> Response:
    """Replace an integration's credentials (of the same kind)."""
    await integrations.set_credentials(
        user.tenant, integration_id, credentials, actor=Actor.of(user)
    )
    return Response(status_code=204)


@router.delete("/devices/{device_id}", status_code=204)
async def unregister_device_integrations(
    user: UserIdentity, device_id: str, integrations: IntegrationsAppDep
) -> Response:
    """Forget a device's integrations without touching the clouds."""
    await integrations.unregister_device(user.tenant, device_id)
    return Response(status_code=204)


@router.get("/devices/{device_id}/state")
async def get_device_state(
    user: UserIdentity, device_id: str, integrations: IntegrationsAppDep
) -> dict[str, DeviceStateOut]:
    """The device's state in every cloud integration it has, by integration id."""
    states = await integrations.device_states(user.tenant, device_id)
    return {integration_id: DeviceStateOut.of(s) for integration_id, s in states.items()}


@router.get("/devices/{device_id}/state/{integration_id}")
async def get_device_state_integration(
    user: UserIdentity,
    device_id: str,
    integration_id: StateIntegrationId,
    integrations: IntegrationsAppDep,
) -> DeviceStateOut:
    """The device's state in one cloud integration."""
    state = await integrations.device_state(user.tenant, device_id, integration_id)
    return DeviceStateOut.of(state)


@router.put("/devices/{device_id}/state/{integration_id}")
async def set_device_state_integration(
    user: UserIdentity,
    device_id: str,
    integration_id: StateIntegrationId,
    body: DeviceStateIn,
    integrations: IntegrationsAppDep,
) -> DeviceStateOut:
    """Replace the device's desired state in one cloud integration."""
    state = await integrations.set_device_state(
        user.tenant, device_id, integration_id, desired=body.desired or {}
    )
    return DeviceStateOut.of(state)


@router.get("/events", response_model_exclude_none=True)
async def get_events(
    user: UserIdentity,
    page: PageDep,
    events: EventsAppDep,
    integration_id: Annotated[str | None, Query()] = None,
) -> list[EventOut]:
    """The tenant's events with their delivery attempts, newest first."""
    wanted = parse_integration_id(integration_id) if integration_id else None
    found = await events.list_events(user.tenant, integration_id=wanted, page=page)
    return [EventOut.of(e) for e in found]
