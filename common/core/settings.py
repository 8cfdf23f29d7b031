"""Settings shared by every service: pydantic-settings with a per-service env prefix.

Any setting may also be given as a file: `<PREFIX><NAME>_FILE=/path` reads the value from
that file (without its trailing newline), so that secrets, a database URL with its password
among them, live in files mounted into the container rather than in its environment. A
variable set directly wins over its `_FILE` form.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["DEV_PLACEHOLDER", "BaseServiceSettings", "Duration", "DurationOrZero"]

# A secret with this value is only acceptable in development mode.
DEV_PLACEHOLDER: Final = "change-me"
_FILE_SUFFIX: Final = "_FILE"


class _FromFiles(PydanticBaseSettingsSource):
    """Values of the settings named by `<PREFIX><NAME>_FILE` variables, read from those files."""

    def get_field_value(
        self,
        field: FieldInfo,  # noqa: ARG002 (the name is enough)
        field_name: str,
    ) -> tuple[Any, str, bool]:
        """One setting's value from its file, if a variable names one."""
        variable = f"{self.config.get('env_prefix', '')}{field_name}{_FILE_SUFFIX}".upper()
        path = os.environ.get(variable)
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().rstrip("\r\n"), field_name, False
        except OSError as exc:
            raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(info, name)
            if value is not None:
                values[name] = value
        return values


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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then `_FILE` variables' files, then the rest."""
        files = _FromFiles(settings_cls)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

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
