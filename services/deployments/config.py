"""Settings of the deployments service (environment prefix `DEPLOYMENTS_`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.core.settings import DEV_PLACEHOLDER, BaseServiceSettings, Duration
from services.deployments.service import SERVICE

__all__ = ["Settings"]

_GIB = 1024**3
_MIB = 1024**2


class Settings(BaseServiceSettings):
    """Deployments settings; unset peer addresses mean the peer is not deployed."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # Where artifact files live: the local directory, or an S3-compatible bucket
    # (Mender's `storage.default`, whose S3 value is "aws").
    storage_default: Literal["local", "aws"] = "local"
    # Directory of the local artifact store.
    storage_path: Path = Path(".fleetport/artifacts")
    # The storage sweep, at start-up and then every `storage_sweep_interval`, removes partial
    # uploads idle for `storage_partial_max_age` (an upload in progress writes all the time)
    # and objects no artifact refers to once `storage_orphan_max_age` old (younger ones may
    # be uploads whose artifact is being recorded).
    storage_sweep_interval: Duration = timedelta(hours=1)
    storage_partial_max_age: Duration = timedelta(hours=1)
    storage_orphan_max_age: Duration = timedelta(hours=1)
    # How long a claim on an artifact job (generation, direct upload) lasts unless its process
    # renews it: a job whose process died is taken up by a replica after this long.
    job_lease: Duration = timedelta(seconds=30)
    # Idle polls: a device no active deployment lists is answered from memory. Each tenant's
    # snapshot holds at most this many device ids (beyond it, polls go to the database); the
    # deployments other replicas create are seen within `poll_snapshot_refresh`.
    poll_snapshot_max_devices: Annotated[int, Field(ge=0)] = 200_000
    poll_snapshot_refresh: Duration = timedelta(seconds=1)
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
    # S3 settings (Mender's `aws.*`): the endpoint this service uses, the host devices use.
    aws_uri: str | None = None
    aws_external_uri: str | None = None
    aws_bucket: str = "mender"
    aws_region: str = "us-east-1"
    aws_auth_key: str | None = None
    aws_auth_secret: str | None = None
    aws_force_path_style: bool = True
    aws_create_bucket: bool = False
    # Internal address of inventory (group and all-devices deployments).
    inventory_addr: str | None = None
    # auditlogs' internal address: operators' changes to artifacts, releases and deployments
    # are recorded there (through the outbox).
    auditlogs_addr: str | None = None

    def secrets(self) -> dict[str, str]:
        """The presign secret may keep its placeholder only in development mode."""
        return {"presign_secret": self.presign_secret}
