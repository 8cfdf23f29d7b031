"""Settings of the devicemonitor service (environment prefix `DEVICEMONITOR_`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings, DurationOrZero
from services.devicemonitor.service import SERVICE

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """devicemonitor settings; unset peer addresses mean the peer is not deployed."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # inventory's internal address: a device's `monitor` attributes are refreshed there.
    inventory_addr: str | None = None
    # auditlogs' internal address: every alert is also an audit event.
    auditlogs_addr: str | None = None
    # Most alerts one request may carry.
    max_alerts_per_batch: Annotated[int, Field(ge=1, le=10_000)] = 100
    # How far ahead of the server's clock a reported time may be (a device's clock drifts).
    max_clock_skew: DurationOrZero = timedelta(minutes=10)
