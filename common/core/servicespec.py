"""How a service declares itself: `SERVICE = ServiceSpec(...)` in `services/<name>/service.py`.

The local stack (`make run`, the tests) finds every declaration and starts each service from
it; the service's own settings take their env prefix and default database from it too. A
declaration imports nothing but this module, so reading every one of them stays fast.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LocalResource", "ServiceSpec"]


class LocalResource(enum.Enum):
    """What the local stack generates for a service that asks for it in `local_env`."""

    # Path of the private key (PEM) that signs user tokens.
    USER_TOKEN_KEY = enum.auto()
    # Path of the private key (PEM) that signs device tokens.
    DEVICE_TOKEN_KEY = enum.auto()
    # The secret (its value) that signs artifact download links.
    DOWNLOAD_LINK_SECRET = enum.auto()
    # The key (its value: 32 bytes, base64) that encrypts credentials at rest.
    CREDENTIALS_KEY = enum.auto()
    # Path of a directory for artifact files.
    ARTIFACTS_DIR = enum.auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    """The facts needed to start a service and wire it to its peers."""

    # The package under `services/`, e.g. `iot_manager`.
    name: str
    # The prefix of every setting, e.g. `IOT_MANAGER_`.
    env_prefix: str
    # The service's name in its internal API paths, e.g. `iot-manager`.
    internal_name: str
    # The Mongo database it owns.
    database: str
    # Services whose internal address it is given (`<PREFIX><PEER>_ADDR`), when they run.
    peers: tuple[str, ...] = ()
    # Settings (without the prefix) the local stack fills in, e.g. a key's path.
    local_env: Mapping[str, LocalResource] = field(default_factory=dict)

    @property
    def module(self) -> str:
        """The module run with `python -m`."""
        return f"services.{self.name}"

    @property
    def health_path(self) -> str:
        """The internal health endpoint."""
        return f"/api/internal/v1/{self.internal_name}/health"
