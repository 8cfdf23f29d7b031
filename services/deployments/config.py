"""Settings of the deployments service (environment prefix `DEPLOYMENTS_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import DEV_PLACEHOLDER, BaseServiceSettings

__all__ = ["Settings"]

_GIB = 1024**3
_MIB = 1024**2


class Settings(BaseServiceSettings):
    """Deployments settings; unset peer addresses mean the peer is not deployed."""

    model_config = SettingsConfigDict(env_prefix="DEPLOYMENTS_", extra="ignore", frozen=True)

    mongo_db: str = "deployment_service"
    # Directory of the local artifact store.
    storage_path: Path = Path(".fleetport/artifacts")
    # Largest artifact accepted by an upload (Mender: storage.max_image_size).
    max_image_size: Annotated[int, Field(ge=1)] = 10 * _GIB
    # Largest raw file accepted by `POST /artifacts/generate`.
    max_generate_size: Annotated[int, Field(ge=1)] = 256 * _MIB
    # Secret of the HMAC-signed download links.
    presign_secret: str = DEV_PLACEHOLDER
    # Base (scheme://host[:port]) of signed links; empty: from X-Forwarded-* or the request.
    presign_url_base: str = ""
    # Whether `POST /artifacts/directupload` hands out upload links.
    enable_direct_upload: bool = True
    # Internal address of inventory (group and all-devices deployments).
    inventory_addr: str | None = None

    def secrets(self) -> dict[str, str]:
        """The presign secret may keep its placeholder only in development mode."""
        return {"presign_secret": self.presign_secret}
