"""Wire-only documents of the inventory API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    model_serializer,
)

from services.inventory.models import Attribute, Device, NewAttribute, StatusStatistics

__all__ = [
    "AttributeOut",
    "DeviceGroupOut",
    "DeviceGroupsOut",
    "DeviceNewIn",
    "DeviceOut",
    "DeviceStatusIn",
    "GroupIn",
    "StatisticsOut",
    "TenantNewIn",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AttributeOut(BaseModel):
    """An attribute as rendered: null description and timestamp are left out."""

    name: str
    scope: str
    value: Any = None
    description: str | None = None
    timestamp: datetime | None = None

    @model_serializer(mode="wrap")
    def _omit_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("description", "timestamp"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @classmethod
    def of(cls, attr: Attribute) -> AttributeOut:
        """Render a domain attribute."""
        return cls(
            name=attr.name,
            scope=attr.scope,
            value=attr.value,
            description=attr.description,
            timestamp=attr.timestamp,
        )


class DeviceOut(BaseModel):
    """A device's inventory: id, attributes of every scope, last device update."""

    id: str
    attributes: list[AttributeOut]
    updated_ts: datetime | None = None

    @model_serializer(mode="wrap")
    def _omit_null_updated(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("updated_ts") is None:
            data.pop("updated_ts", None)
        return data

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        """Render a domain device."""
        return cls(
            id=device.id,
            attributes=[AttributeOut.of(a) for a in device.attributes],
            updated_ts=device.updated_ts,
        )


class GroupIn(_In):
    """The group to put a device in."""

    group: StrictStr


class DeviceGroupOut(BaseModel):
    """A device's group, null when it has none."""

    group: str | None


class DeviceGroupsOut(BaseModel):
    """The groups of a device, for peers."""

    groups: list[str]


class DeviceNewIn(_In):
    """A device created by a peer, with its first attributes."""

    id: StrictStr
    attributes: list[NewAttribute] = []


class DeviceStatusIn(_In):
    """A device whose status changed, with deviceauth's revision of that change, and when
    it checked in if the change came with a check-in (an addition to Mender's item)."""

    id: StrictStr
    revision: Annotated[StrictInt, Field(ge=0)]
    check_in_time: StrictStr | None = None


class TenantNewIn(_In):
    """A new tenant."""

    tenant_id: StrictStr


class StatisticsOut(BaseModel):
    """Device statistics."""

    devices_by_status: StatusStatistics
