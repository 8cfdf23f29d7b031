"""Settings of the deviceconnect service (environment prefix `DEVICECONNECT_`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings, Duration, DurationOrZero
from services.deviceconnect.service import SERVICE

__all__ = ["Settings"]

_KIB = 1024
_MIB = 1024**2
_GIB = 1024**3


class Settings(BaseServiceSettings):
    """deviceconnect settings; an unset NATS address means a single instance."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # NATS server shared by the replicas (e.g. nats://nats:4222); unset: one instance alone.
    nats_uri: str | None = None
    # Largest websocket message accepted from a device or a user (Mender: 8 MiB).
    max_message_size: Annotated[int, Field(ge=16 * _KIB)] = 8 * _MIB
    # Largest file uploaded to or downloaded from a device (Mender: 1 GiB).
    max_file_size: Annotated[int, Field(ge=1)] = _GIB
    # The longest a file transfer waits for the device.
    file_transfer_timeout: Duration = timedelta(seconds=60)
    # Websocket keep-alive: a ping every interval; no answer within the timeout closes it.
    ping_interval: Duration = timedelta(seconds=30)
    ping_timeout: Duration = timedelta(seconds=30)
    # Device output buffered per session for a reader that falls behind; past it the device
    # is read no further until the reader catches up, or the stall timeout drops the session.
    session_buffer_size: Annotated[int, Field(ge=64 * _KIB)] = _MIB
    session_stall_timeout: Duration = timedelta(seconds=10)
    # Terminal output recorded per session; past it the session is stopped (Mender: 8 MiB).
    recording_max_size: Annotated[int, Field(ge=_KIB)] = 8 * _MIB
    # How long recordings are kept.
    recording_expire: Duration = timedelta(days=30)
    # Between instances (NATS): unacknowledged bytes per session direction, and keepalives.
    nats_window: Annotated[int, Field(ge=64 * _KIB)] = _MIB
    nats_keepalive: Duration = timedelta(seconds=10)
    # `GET /shutdown` closes the websockets over this period.
    shutdown_drain: DurationOrZero = timedelta(seconds=10)
    # Internal address of auditlogs (audit events wait in the outbox until it is set).
    auditlogs_addr: str | None = None
