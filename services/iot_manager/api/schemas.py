"""Wire-only request and response models (Mender's JSON shapes); secrets never go out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from services.iot_manager.models import (
    MAX_DESCRIPTION_LENGTH,
    AuthSet,
    AWSCredentials,
    Credentials,
    DeliveryStatus,
    DeviceState,
    Event,
    HTTPCredentials,
    Integration,
    Provider,
)

__all__ = [
    "DeliveryStatusOut",
    "DeviceStateIn",
    "DeviceStateOut",
    "EventOut",
    "IntegrationIn",
    "IntegrationOut",
    "NewDeviceIn",
    "StatusDeviceIn",
    "masked_credentials",
]

OMITTED: Final = "<omitted>"


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class IntegrationIn(_In):
    """A new integration (an `id` in the body is ignored: the server assigns it)."""

    provider: Provider
    credentials: Credentials
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)] = ""


def masked_credentials(credentials: Credentials) -> dict[str, Any]:
    """The credentials as the API shows them: every secret replaced."""
    if isinstance(credentials, HTTPCredentials):
        http: dict[str, Any] = {"url": credentials.http.url}
        if credentials.http.secret is not None:
            http["secret"] = OMITTED
        return {"type": "http", "http": http}
    if isinstance(credentials, AWSCredentials):
        keys = {**credentials.aws.model_dump(), "secret_access_key": OMITTED}
        return {"type": "aws", "aws": keys}
    return {"type": "sas", "connection_string": credentials.connection_string.render(masked=True)}


class IntegrationOut(BaseModel):
    """An integration with its secrets masked."""

    id: str
    provider: Provider
    credentials: dict[str, Any]
    description: str | None = None

    @classmethod
    def of(cls, integration: Integration) -> IntegrationOut:
        """The wire form of an integration."""
        return cls(
            id=integration.id,
            provider=integration.provider,
            credentials=masked_credentials(integration.credentials),
            description=integration.description or None,
        )


class DeliveryStatusOut(BaseModel):
    """The outcome of one delivery attempt."""

    integration_id: str
    success: bool
    status_code: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, status: DeliveryStatus) -> DeliveryStatusOut:
        """The wire form of a delivery status."""
        return cls(**status.model_dump())


class EventOut(BaseModel):
    """An event with its delivery attempts, the latest first."""

    id: str
    type: str
    data: dict[str, Any]
    time: datetime
    delivery_statuses: list[DeliveryStatusOut] | None = None

    @classmethod
    def of(cls, event: Event) -> EventOut:
        """The wire form of an event."""
        return cls(
            id=event.id,
            type=event.type.value,
            data=event.data.wire(),
            time=event.time,
            delivery_statuses=[DeliveryStatusOut.of(s) for s in event.delivery_statuses] or None,
        )


class DeviceStateOut(BaseModel):
    """The desired and reported state of a device in one cloud."""

    desired: dict[str, Any]
    reported: dict[str, Any]

    @classmethod
    def of(cls, state: DeviceState) -> DeviceStateOut:
        """The wire form of a device state."""
        return cls(desired=state.desired, reported=state.reported)


class DeviceStateIn(_In):
    """A new desired state (`reported` belongs to the device and is ignored)."""

    desired: dict[str, Any] | None = None


class NewDeviceIn(_In):
    """A device deviceauth provisions (`device_id` is the older name of `id`)."""

    id: str | None = None
    device_id: str | None = None
    status: str | None = None
    auth_sets: list[AuthSet] = Field(default_factory=list)
    created_ts: datetime | None = None


class StatusDeviceIn(_In):
    """A device whose status changed."""

    id: Annotated[str, Field(min_length=1)]
