"""Settings of the deviceauth service (environment prefix `DEVICEAUTH_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings
from services.deviceauth.service import SERVICE

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """Configuration of deviceauth; every field is read from `DEVICEAUTH_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # PEM private key (RSA → RS256, Ed25519 → EdDSA) that signs device tokens. Without it,
    # development mode signs with a key generated at start-up (tokens die with the process).
    server_priv_key_path: Path | None = None
    # An older key whose tokens are still accepted (key rotation).
    server_fallback_priv_key_path: Path | None = None
    jwt_issuer: str = "Mender"
    # Lifetime of a device token, in seconds.
    jwt_exp_timeout: Annotated[int, Field(ge=1)] = 604800
    # Accepted-device limit applied to a tenant without its own limit; 0 means unlimited.
    max_devices: Annotated[int, Field(ge=0)] = 0
    inventory_addr: str | None = None
    deployments_addr: str | None = None
    deviceconnect_addr: str | None = None
    deviceconfig_addr: str | None = None
    iot_manager_addr: str | None = None
    # devicemonitor's internal address: a decommissioned device's alerts and telemetry go.
    devicemonitor_addr: str | None = None
    auditlogs_addr: str | None = None
    # NATS server on which revocations are published to the gateways (e.g.
    # `nats://nats:4222`); unset: the gateways read them from the feed endpoint alone.
    nats_uri: str | None = None
    # How often the outbox relay looks for effects when nothing woke it, in seconds.
    outbox_poll_interval: Annotated[float, Field(gt=0)] = 1.0
    # Requests the outbox relay keeps in flight per peer (different devices in parallel).
    outbox_concurrency: Annotated[int, Field(ge=1)] = 16

    @model_validator(mode="after")
    def _require_key_outside_development(self) -> Settings:
        if not self.dev_mode and self.server_priv_key_path is None:
            raise ValueError("server_priv_key_path is required unless dev_mode is enabled")
        return self

    def peers(self) -> dict[str, str | None]:
        """Peer name → base address (None when the peer is not deployed)."""
        return {
            "inventory": self.inventory_addr or None,
            "deployments": self.deployments_addr or None,
            "deviceconnect": self.deviceconnect_addr or None,
            "deviceconfig": self.deviceconfig_addr or None,
            "iot_manager": self.iot_manager_addr or None,
            "devicemonitor": self.devicemonitor_addr or None,
            "auditlogs": self.auditlogs_addr or None,
        }
