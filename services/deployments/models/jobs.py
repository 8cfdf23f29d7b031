"""Background work with a persistent record: artifact generation and direct uploads."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from services.deployments.models.base import Model

__all__ = ["GenerateJob", "JobState", "UploadIntent"]

JobState = Literal["pending", "processing", "done", "failed"]


class GenerateJob(Model):
    """An artifact being generated from an uploaded file; `id` becomes the artifact's id."""

    id: str
    tenant_id: str
    state: JobState = "pending"
    name: str
    description: str = ""
    device_types: list[str]
    filename: str
    dest_dir: str
    permissions: str = "644"
    raw_key: str
    raw_size: int
    created: datetime
    error: str = ""
    # The user who submitted it: the artifact's audit event names them.
    user_id: str | None = None
    # Which process runs it, until when (see `common.core.leases`), and how many times a
    # process has taken it up.
    lease_owner: str = ""
    lease_until: datetime | None = None
    claims: int = 0


class UploadIntent(Model):
    """A direct upload link handed out; `id` becomes the artifact's id once completed."""

    id: str
    tenant_id: str
    key: str
    state: JobState = "pending"
    expire: datetime
    created: datetime
    error: str = ""
    # The user who asked for the link: the artifact's audit event names them.
    user_id: str | None = None
    lease_owner: str = ""
    lease_until: datetime | None = None
    claims: int = 0
