"""Settings of the devicemonitor service (environment prefix `DEVICEMONITOR_`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings, Duration, DurationOrZero
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
    # Most telemetry samples one request may carry.
    max_samples_per_batch: Annotated[int, Field(ge=1, le=3600)] = 600
    # How long telemetry statistics are kept (whole hours expire together).
    telemetry_retention: Duration = timedelta(days=30)
    # How long a replica uses the thresholds it read before it reads them again: a change
    # made through another replica applies there within this time.
    thresholds_cache_ttl: Annotated[float, Field(ge=0)] = 5.0
    # How often a telemetry stream looks for new samples, and how long it stays silent
    # before it sends a keep-alive comment.
    stream_poll_interval: Annotated[float, Field(gt=0)] = 1.0
    stream_keepalive: Annotated[float, Field(gt=0)] = 15.0
