"""Deployments, device deployments (one device's part in a deployment) and their logs."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any, Final, Literal

from pydantic import Field

from services.deployments.models.artifacts import Artifact
from services.deployments.models.base import Model

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "STAT_NAMES",
    "Deployment",
    "DeploymentStatus",
    "DeploymentType",
    "DeviceDeployment",
    "DeviceDeploymentStatus",
    "LastDeviceDeployment",
    "LogMessage",
    "NextRequest",
]

DeploymentStatus = Literal["pending", "inprogress", "finished"]
DeploymentType = Literal["software", "configuration"]


class DeviceDeploymentStatus(IntEnum):
    """A device deployment's status; the values are Mender's stored integers (`iota << 8`)."""

    FAILURE = 256
    ABORTED = 512
    PAUSE_BEFORE_INSTALLING = 768
    PAUSE_BEFORE_COMMITTING = 1024
    PAUSE_BEFORE_REBOOTING = 1280
    DOWNLOADING = 1536
    INSTALLING = 1792
    REBOOTING = 2048
    PENDING = 2304
    SUCCESS = 2560
    NOARTIFACT = 2816
    ALREADY_INSTALLED = 3072
    DECOMMISSIONED = 3328

    @property
    def label(self) -> str:
        """The wire name (`already-installed`, `pause_before_installing`, …)."""
        return _LABELS[self]

    @property
    def active(self) -> bool:
        """Whether the device is still working on the deployment (pauses … pending)."""
        return self in ACTIVE_STATUSES

    @classmethod
    def from_label(cls, label: str) -> DeviceDeploymentStatus:
        """The status with the given wire name; `ValueError` when unknown."""
        try:
            return _BY_LABEL[label]
        except KeyError:
            raise ValueError(f"unknown status {label!r}") from None


_LABELS: Final = {
    s: ("already-installed" if s is DeviceDeploymentStatus.ALREADY_INSTALLED else s.name.lower())
    for s in DeviceDeploymentStatus
}
_BY_LABEL: Final = {label: status for status, label in _LABELS.items()}

ACTIVE_STATUSES: Final = frozenset(
    s
    for s in DeviceDeploymentStatus
    if DeviceDeploymentStatus.PAUSE_BEFORE_INSTALLING <= s <= DeviceDeploymentStatus.PENDING
)
# Statuses that count towards a deployment being finished.
FINISHED_STATUSES: Final = frozenset(
    {
        DeviceDeploymentStatus.SUCCESS,
        DeviceDeploymentStatus.FAILURE,
        DeviceDeploymentStatus.ALREADY_INSTALLED,
        DeviceDeploymentStatus.NOARTIFACT,
        DeviceDeploymentStatus.ABORTED,
        DeviceDeploymentStatus.DECOMMISSIONED,
    }
)
# Every statistics key, in the order Mender lists them.
STAT_NAMES: Final = tuple(s.label for s in DeviceDeploymentStatus)


class Deployment(Model):
    """A deployment; `device_list` is resolved when it is created (static)."""

    id: str
    name: str
    artifact_name: str
    type: DeploymentType = "software"
    artifacts: list[str] = Field(default_factory=list)
    device_list: list[str] = Field(default_factory=list)
    max_devices: int = 0
    device_count: int = 0
    stats: dict[str, int] = Field(default_factory=dict)
    status: DeploymentStatus = "pending"
    active: bool = True
    created: datetime
    finished: datetime | None = None
    groups: list[str] = Field(default_factory=list)
    filter: dict[str, Any] | None = None
    total_size: int = 0
    force_installation: bool = False
    configuration: str | None = None
    # How many times a device may start again after a failure (configuration deployments).
    retries: int = 0


class NextRequest(Model):
    """What a device said about itself when it asked for an update."""

    device_type: str
    artifact_name: str
    provides: dict[str, str] = Field(default_factory=dict)


class DeviceDeployment(Model):
    """One device's part in a deployment."""

    id: str
    deployment_id: str
    device_id: str
    status: DeviceDeploymentStatus
    active: bool
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    deleted: datetime | None = None
    substate: str = ""
    device_type: str = ""
    image: Artifact | None = None
    request: NextRequest | None = None
    log: bool = False
    # Copied from the deployment so the hot path needs no second lookup.
    deployment_type: DeploymentType = "software"
    force_installation: bool = False
    artifact_name: str = ""
    retries: int = 0
    # Which attempt this is: 1, then one more each time a failure is retried.
    attempts: int = 1


class LogMessage(Model):
    """One line of a device's deployment log."""

    timestamp: datetime
    level: str
    message: str


class LastDeviceDeployment(Model):
    """The status a device deployment ended with, kept per device."""

    device_id: str
    deployment_id: str
    device_deployment_id: str
    status: str
