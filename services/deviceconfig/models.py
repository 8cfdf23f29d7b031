"""Domain models of deviceconfig: what a device should have and what it reported."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Configuration", "DeviceConfiguration"]

# Keys and values are strings, as the device's configuration file has them.
Configuration = dict[str, str]


class DeviceConfiguration(BaseModel):
    """One device: its desired (`configured`) and `reported` configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    configured: Configuration = Field(default_factory=dict)
    reported: Configuration = Field(default_factory=dict)
    # The latest configuration deployment of the device.
    deployment_id: str | None = None
    # When the desired configuration changed (or the device was first recorded).
    updated_ts: datetime | None = None
    # When the device last reported what it applied.
    reported_ts: datetime | None = None
    # Grows with every change of `configured`: the compare-and-set token of merges.
    revision: int = 0
