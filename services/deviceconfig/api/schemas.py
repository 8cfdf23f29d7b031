"""Wire-only request and response models (Mender's JSON shapes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from services.deviceconfig.models import Configuration, DeviceConfiguration

__all__ = ["DeployIn", "DeployOut", "DeviceConfigurationOut", "NewDeviceIn", "NewTenantIn"]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DeviceConfigurationOut(BaseModel):
    """`GET /configurations/device/{id}`: both configurations of a device."""

    id: str
    configured: Configuration
    reported: Configuration
    deployment_id: str | None = None
    updated_ts: datetime | None = None
    reported_ts: datetime | None = None

    @classmethod
    def of(cls, device: DeviceConfiguration) -> DeviceConfigurationOut:
        """Render a device."""
        return cls(
            id=device.id,
            configured=device.configured,
            reported=device.reported,
            deployment_id=device.deployment_id,
            updated_ts=device.updated_ts,
            reported_ts=device.reported_ts,
        )


class DeployIn(_In):
    """`POST …/deploy`: how often the device may retry; no update control map (Enterprise)."""

    retries: Annotated[StrictInt, Field(ge=0)] = 0
    update_control_map: dict[str, Any] | None = None

    @field_validator("retries", mode="before")
    @classmethod
    def _null_is_zero(cls, value: Any) -> Any:
        # NOTE: Mender decodes a JSON null into its unsigned count as 0.
        return 0 if value is None else value


class DeployOut(BaseModel):
    """The new configuration deployment."""

    deployment_id: str


class NewDeviceIn(_In):
    """Internal: a device to record (deviceauth's provisioning)."""

    device_id: StrictStr = ""


class NewTenantIn(_In):
    """Internal: a new tenant."""

    tenant_id: StrictStr = ""
