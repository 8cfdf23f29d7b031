"""Settings of the inventory service (environment prefix `INVENTORY_`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings, Duration
from services.inventory.service import SERVICE

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """Inventory settings: database, attribute limits and the devicemonitor peer."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # Most attributes a device may have in one scope (0: unlimited), as Mender's
    # `limit_attributes`; tags have their own limit.
    limit_attributes: Annotated[int, Field(ge=0)] = 100
    limit_tags: Annotated[int, Field(ge=0)] = 20
    # A device's report that is the same as the last one is not written again, but for
    # refreshing its `updated_ts` at most once per this period.
    report_refresh: Duration = timedelta(hours=1)
    # devicemonitor's internal address, for re-indexing monitor attributes; unset when
    # devicemonitor is not deployed.
    devicemonitor_addr: str | None = None
