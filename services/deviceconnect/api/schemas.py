"""Wire-only request and response models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.deviceconnect.models import ConnectionStatus, Device

__all__ = ["ConnectionState", "ProvisionDeviceIn"]


class ConnectionState(BaseModel):
    """A device's connection state as Mender renders it."""

    device_id: str
    status: ConnectionStatus
    created_ts: datetime
    updated_ts: datetime

    @classmethod
    def of(cls, device: Device) -> ConnectionState:
        """Render a device."""
        return cls(
            device_id=device.id,
            status=device.status,
            created_ts=device.created_ts,
            updated_ts=device.updated_ts,
        )


class ProvisionDeviceIn(BaseModel):
    """deviceauth's provisioning request."""

    device_id: str = Field(min_length=1)
