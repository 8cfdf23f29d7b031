"""Settings of iot-manager (environment prefix `IOT_MANAGER_`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Annotated, Final

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings
from services.iot_manager.service import SERVICE

__all__ = ["DEV_ENCRYPTION_KEY", "Settings"]

_KEY_BYTES: Final = 32
# Encrypts stored credentials in development mode when no key is set; it is no secret.
DEV_ENCRYPTION_KEY: Final = hashlib.sha256(b"fleetport iot-manager development key").digest()


def _decode_key(value: str) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("must be base64") from None
    if len(key) != _KEY_BYTES:
        raise ValueError(f"must be {_KEY_BYTES} bytes, base64-encoded")
    return key


class Settings(BaseServiceSettings):
    """iot-manager settings; the names follow Mender's iot-manager where it has one."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # Key that encrypts stored credentials (32 bytes, base64); a fallback key still
    # decrypts what the previous key encrypted (key rotation).
    aes_encryption_key: str = ""
    aes_encryption_fallback_key: str = ""
    # Host names an Azure IoT Hub connection string may name (`*` matches one label).
    domain_whitelist: str = "*.azure-devices.net *.iot.*.amazonaws.com"
    # Allow webhooks and IoT Hub hosts on loopback, private and link-local addresses.
    domain_skipverify: bool = False
    # How long events are kept, in seconds.
    event_exp_timeout: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    # Timeout of one webhook or IoT Hub request, in seconds.
    webhooks_timeout_seconds: Annotated[int, Field(ge=1)] = 10
    # Where AWS IoT requests go instead of the region's endpoints (a VPC endpoint or a
    # stand-in); device shadows are read there too.
    aws_endpoint_url: str | None = None
    # PEM file of the certificate authorities trusted for outgoing HTTPS instead of the
    # default bundle (e.g. a proxy that inspects TLS).
    ca_file: Path | None = None
    # auditlogs' internal address: users' changes to integrations are recorded there.
    auditlogs_addr: str | None = None
    # How often the delivery loop looks for due deliveries when nothing woke it, in seconds.
    outbox_poll_interval: Annotated[float, Field(gt=0)] = 1.0
    # Longest wait between two delivery attempts of one event, in seconds.
    retry_max_backoff: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("aes_encryption_key", "aes_encryption_fallback_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        if value:
            _decode_key(value)
        return value

    @model_validator(mode="after")
    def _require_key_outside_development(self) -> Settings:
        if not self.dev_mode and not self.aes_encryption_key:
            raise ValueError("aes_encryption_key is required unless dev_mode is enabled")
        return self

    def encryption_keys(self) -> tuple[bytes, bytes | None]:
        """The key that encrypts credentials and the fallback that may still decrypt them."""
        key = _decode_key(self.aes_encryption_key) if self.aes_encryption_key else None
        fallback = (
            _decode_key(self.aes_encryption_fallback_key)
            if self.aes_encryption_fallback_key
            else None
        )
        return key or DEV_ENCRYPTION_KEY, fallback

    def trusted_hosts(self) -> list[str]:
        """The host name patterns of the domain whitelist."""
        return self.domain_whitelist.split()
