"""Settings of the deviceconfig service (environment prefix `DEVICECONFIG_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings
from services.deviceconfig.service import SERVICE

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """deviceconfig settings; unset peer addresses mean the peer is not deployed."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # deployments' internal address: configuration deployments are created there.
    deployments_addr: str | None = None
    # deviceconnect's internal address: a connected device is told to check for the new
    # deployment at once. Unset: the device finds it on its next poll.
    deviceconnect_addr: str | None = None
    # auditlogs' internal address: users' changes are recorded there (through the outbox).
    auditlogs_addr: str | None = None
