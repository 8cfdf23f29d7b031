"""Settings of the auditlogs service (environment prefix `AUDITLOGS_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings, Duration
from services.auditlogs.service import SERVICE

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """auditlogs settings."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # How long an event is kept after it happened (seconds or ISO 8601, e.g. `P90D`); a TTL
    # index removes it afterwards. A change applies to the events recorded from then on.
    retention: Duration = timedelta(days=90)
    # useradm's internal address: the email of a user who acted is looked up there when the
    # event does not carry it. Unset: events keep what they carry.
    useradm_addr: str | None = None
