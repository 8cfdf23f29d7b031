"""Settings shared by every service: pydantic-settings with a per-service env prefix."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Final

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEV_PLACEHOLDER", "BaseServiceSettings", "Duration", "DurationOrZero"]

# A secret with this value is only acceptable in development mode.
DEV_PLACEHOLDER: Final = "change-me"


def _seconds(value: object) -> object:
    """A number of seconds, as an environment variable gives it, becomes a timedelta."""
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except (ValueError, OverflowError):
            return value  # ISO 8601 (`PT1H`) or `[D days, ]HH:MM:SS`, parsed by pydantic
    return value


# A duration in seconds (`90`, `2.5`) or ISO 8601 (`PT1H30M`): positive, or also zero.
Duration = Annotated[timedelta, BeforeValidator(_seconds), Field(gt=timedelta(0))]
DurationOrZero = Annotated[timedelta, BeforeValidator(_seconds), Field(ge=timedelta(0))]


class BaseServiceSettings(BaseSettings):
    """Base for a service's settings; subclasses set `env_prefix` (e.g. `USERADM_`)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = ""
    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    dev_mode: bool = False
    log_level: str = "INFO"
    # JSON request bodies larger than this are refused with 413.
    request_size_limit: Annotated[int, Field(ge=1024)] = 1024 * 1024
    # Timeout for calls to peer services, in seconds.
    peer_timeout: Annotated[float, Field(gt=0)] = 10.0

    def secrets(self) -> dict[str, str]:
        """Name → value of the secrets that must not keep their placeholder in production."""
        return {}

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> BaseServiceSettings:
        if not self.dev_mode:
            weak = [name for name, value in self.secrets().items() if value == DEV_PLACEHOLDER]
            if weak:
                raise ValueError(
                    f"{', '.join(weak)} still has the development placeholder; "
                    "set a real secret or enable dev_mode"
                )
        return self
