"""The deployments data store: the interface the use-cases depend on.

Every method takes the tenant first; implementations confine each operation to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from services.deployments.models import (
    Artifact,
    Deployment,
    DeviceDeployment,
    DeviceDeploymentStatus,
    GenerateJob,
    JobState,
    LastDeviceDeployment,
    LogMessage,
    Release,
    UploadIntent,
)

__all__ = [
    "ArtifactFilter",
    "ArtifactStore",
    "DataStore",
    "DeploymentFilter",
    "DeploymentStore",
    "DuplicateArtifact",
    "DuplicateDeployment",
    "DuplicateId",
    "JobStore",
    "ReleaseFilter",
    "ReleaseStore",
    "StatsChange",
    "TextMatch",
]


class DuplicateArtifact(Exception):
    """An artifact with the same name and an overlapping `depends` combination exists."""

    def __init__(self, conflict: dict[str, Any]) -> None:
        super().__init__("an artifact with the same name and depends already exists")
        self.conflict = conflict


class DuplicateId(Exception):
    """A document with the same id exists."""


class DuplicateDeployment(Exception):
    """An active deployment was created from the same parameters."""


@dataclass(frozen=True, slots=True)
class TextMatch:
    """How a text filter matches: exactly, by prefix, or anywhere (case-insensitive)."""

    value: str
    kind: Literal["exact", "prefix", "contains"] = "exact"


@dataclass(frozen=True, slots=True)
class ArtifactFilter:
    """Artifact list filters; several `names` match any of them."""

    names: Sequence[TextMatch] = ()
    description: TextMatch | None = None
    device_type: TextMatch | None = None


@dataclass(frozen=True, slots=True)
class ReleaseFilter:
    """Release list filters; several `names` or `tags` match any of them."""

    names: Sequence[TextMatch] = ()
    description: TextMatch | None = None
    device_type: str | None = None
    update_type: str | None = None
    tags: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class DeploymentFilter:
    """Deployment list filters."""

    status: Literal["pending", "inprogress", "finished", "aborted"] | None = None
    type: Literal["software", "configuration"] | None = None
    search: str = ""
    names: Sequence[str] = ()
    ids: Sequence[str] = ()
    device_ids: Sequence[str] | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    ascending: bool = False


@dataclass(frozen=True, slots=True)
class StatsChange:
    """One atomic change of a deployment's counters (one status count moved, a new device)."""

    decrement: str | None = None
    increment: str | None = None
    devices: int = 0
    add_size: int = 0

    def inverse(self) -> StatsChange:
        """The change undoing this one."""
        return StatsChange(
            decrement=self.increment,
            increment=self.decrement,
            devices=-self.devices,
            add_size=-self.add_size,
        )


class ArtifactStore(Protocol):
    """Artifacts (`images`)."""

    async def insert_artifact(self, tenant_id: str, artifact: Artifact) -> None:
        """Insert; `DuplicateArtifact` on a name/depends clash, `DuplicateId` on an id clash."""
        ...

    async def get_artifact(self, tenant_id: str, artifact_id: str) -> Artifact | None:
        """The artifact with this id."""
        ...

    async def list_artifacts(
        self,
        tenant_id: str,
        filter_: ArtifactFilter,
        *,
        skip: int = 0,
        limit: int | None = None,
        sort: tuple[str, bool] = ("name", True),
    ) -> tuple[list[Artifact], int]:
        """A page of matching artifacts and the number of all matches."""
        ...

    async def artifacts_named(self, tenant_id: str, names: Sequence[str]) -> list[Artifact]:
        """Every artifact whose name is one of `names`."""
        ...

    async def smallest_compatible_artifact(
        self, tenant_id: str, artifact_ids: Sequence[str], device_type: str
    ) -> Artifact | None:
        """The smallest of the artifacts compatible with the device type."""
        ...

    async def set_artifact_description(
        self, tenant_id: str, artifact_id: str, description: str, modified: datetime
    ) -> Artifact | None:
        """Change the description; the updated artifact, or None if absent."""
        ...

    async def delete_artifact(self, tenant_id: str, artifact_id: str) -> Artifact | None:
        """Delete and return the artifact."""
        ...


class ReleaseStore(Protocol):
    """Releases: one document per artifact name."""

    async def add_to_release(self, tenant_id: str, artifact: Artifact) -> None:
        """Record the artifact in its release (creating the release)."""
        ...

    async def remove_from_release(self, tenant_id: str, artifact: Artifact) -> None:
        """Drop the artifact from its release (deleting a release left empty)."""
        ...

    async def set_release_artifact_description(self, tenant_id: str, artifact: Artifact) -> None:
        """Refresh the release's copy of the artifact's description."""
        ...

    async def get_release(self, tenant_id: str, name: str) -> Release | None:
        """The release with this name."""
        ...

    async def list_releases(
        self,
        tenant_id: str,
        filter_: ReleaseFilter,
        *,
        skip: int = 0,
        limit: int | None = None,
        sort: tuple[str, bool] = ("name", True),
    ) -> tuple[list[Release], int]:
        """A page of matching releases and the number of all matches."""
        ...

    async def set_release_tags(self, tenant_id: str, name: str, tags: list[str]) -> bool:
        """Replace the release's tags; False when there is no such release."""
        ...

    async def set_release_notes(self, tenant_id: str, name: str, notes: str) -> bool:
        """Replace the release's notes; False when there is no such release."""
        ...

    async def release_tags(self, tenant_id: str) -> list[str]:
        """Every tag in use, sorted."""
        ...

    async def release_update_types(self, tenant_id: str) -> list[str]:
        """Every update type of the stored artifacts, sorted."""
        ...

    async def delete_releases(self, tenant_id: str, names: Sequence[str]) -> None:
        """Delete the release documents."""
        ...


class DeploymentStore(Protocol):
    """Deployments, device deployments, logs, last statuses."""

    async def insert_deployment(
        self, tenant_id: str, deployment: Deployment, *, checksum: str
    ) -> None:
        """Insert; `DuplicateDeployment` when an active one has the same checksum."""
        ...

    async def get_deployment(self, tenant_id: str, deployment_id: str) -> Deployment | None:
        """The deployment with this id."""
        ...

    async def get_deployments(
        self, tenant_id: str, deployment_ids: Sequence[str]
    ) -> list[Deployment]:
        """The deployments with these ids (those that exist)."""
        ...

    async def list_deployments(
        self, tenant_id: str, filter_: DeploymentFilter, *, skip: int, limit: int
    ) -> tuple[list[Deployment], int]:
        """A page of matching deployments (by creation time) and the number of all matches."""
        ...

    async def add_artifact_to_deployments(
        self, tenant_id: str, artifact_name: str, artifact_id: str
    ) -> None:
        """Make a new artifact available to the unfinished deployments of its name."""
        ...

    async def active_deployments_using(
        self,
        tenant_id: str,
        *,
        artifact_id: str | None = None,
        artifact_names: Sequence[str] = (),
        active_only: bool = True,
    ) -> list[str]:
        """Ids of (active) deployments using the artifact or any artifact of the names."""
        ...

    async def find_next_deployment(
        self, tenant_id: str, device_id: str, created_after: datetime | None
    ) -> Deployment | None:
        """The oldest active deployment listing the device, newer than `created_after`.

        The result carries no device list and no counters (not needed to start a device).
        """
        ...

    async def change_stats(
        self,
        tenant_id: str,
        deployment_id: str,
        change: StatsChange,
        *,
        require_room: bool = False,
    ) -> bool:
        """Apply the change with one atomic `$inc`, then move the status forward if due.

        With `require_room` the change applies only while fewer devices than `max_devices`
        have started. Returns whether the change was applied.
        """
        ...

    async def finish_deployment(
        self, tenant_id: str, deployment_id: str, *, stats: dict[str, int], now: datetime
    ) -> None:
        """Replace the statistics and mark the deployment finished."""
        ...

    async def insert_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> tuple[DeviceDeployment, bool]:
        """Insert unless the device already has a live one for the deployment.

        Returns the stored device deployment and whether it was created now.
        """
        ...

    async def find_active_device_deployment(
        self, tenant_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """The device's oldest active device deployment."""
        ...

    async def find_latest_inactive_device_deployment(
        self, tenant_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """The device's newest finished, not history-deleted, device deployment."""
        ...

    async def get_device_deployment(
        self, tenant_id: str, deployment_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """The device's live device deployment in the deployment."""
        ...

    async def update_device_deployment_status(
        self,
        tenant_id: str,
        device_deployment: DeviceDeployment,
        *,
        status: DeviceDeploymentStatus,
        substate: str | None = None,
        now: datetime,
    ) -> DeviceDeployment | None:
        """Move from the given document's status to `status` (compare-and-set).

        Returns the updated device deployment, or None if its status changed meanwhile.
        """
        ...

    async def restart_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> DeviceDeployment | None:
        """Put it back to pending as its next attempt (compare-and-set); None if it changed."""
        ...

    async def save_device_deployment_request(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> None:
        """Persist the device's first request for this update."""
        ...

    async def list_device_deployments(
        self,
        tenant_id: str,
        *,
        deployment_id: str | None = None,
        device_id: str | None = None,
        ids: Sequence[str] = (),
        statuses: Sequence[DeviceDeploymentStatus] | None = None,
        skip: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> tuple[list[DeviceDeployment], int]:
        """A page of live device deployments and their number (capped at 10 000)."""
        ...

    async def abort_device_deployments(
        self, tenant_id: str, deployment_id: str, *, now: datetime
    ) -> None:
        """Set every active device deployment of the deployment to aborted."""
        ...

    async def count_device_deployments_by_status(
        self, tenant_id: str, deployment_id: str
    ) -> dict[str, int]:
        """Status label → number of the deployment's live device deployments."""
        ...

    async def delete_device_history(self, tenant_id: str, device_id: str, now: datetime) -> None:
        """Mark the device's finished device deployments deleted."""
        ...

    async def save_log(
        self, tenant_id: str, deployment_id: str, device_id: str, messages: list[LogMessage]
    ) -> None:
        """Store (replace) the device's log for the deployment."""
        ...

    async def get_log(
        self, tenant_id: str, deployment_id: str, device_id: str
    ) -> list[LogMessage] | None:
        """The device's log for the deployment."""
        ...

    async def set_log_available(self, tenant_id: str, deployment_id: str, device_id: str) -> None:
        """Flag the device deployment as having a log."""
        ...

    async def save_last_status(self, tenant_id: str, last: LastDeviceDeployment) -> None:
        """Remember how the device's latest device deployment ended."""
        ...

    async def last_statuses(
        self, tenant_id: str, device_ids: Sequence[str]
    ) -> list[LastDeviceDeployment]:
        """The remembered final statuses of these devices."""
        ...


class JobStore(Protocol):
    """Limits, per-tenant settings and background jobs."""

    async def get_limit(self, tenant_id: str, name: str) -> int:
        """A limit's value (0 when unset)."""
        ...

    async def set_limit(self, tenant_id: str, name: str, value: int) -> None:
        """Set a limit."""
        ...

    async def get_storage_settings(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's storage settings."""
        ...

    async def set_storage_settings(self, tenant_id: str, settings: dict[str, Any] | None) -> None:
        """Replace (or with None clear) the tenant's storage settings."""
        ...

    async def insert_job(self, job: GenerateJob) -> None:
        """Record a generation job."""
        ...

    async def get_job(self, tenant_id: str, job_id: str) -> GenerateJob | None:
        """A generation job."""
        ...

    async def set_job_state(
        self, tenant_id: str, job_id: str, state: JobState, *, error: str = ""
    ) -> None:
        """Record a job's progress."""
        ...

    async def unfinished_jobs(self) -> list[GenerateJob]:
        """Jobs of every tenant not done or failed (start-up recovery)."""
        ...

    async def insert_intent(self, intent: UploadIntent) -> None:
        """Record a direct-upload intent."""
        ...

    async def get_intent(self, tenant_id: str, intent_id: str) -> UploadIntent | None:
        """A direct-upload intent."""
        ...

    async def claim_intent(
        self, tenant_id: str, intent_id: str, *, from_state: JobState, to_state: JobState
    ) -> UploadIntent | None:
        """Move an intent between states (compare-and-set)."""
        ...

    async def set_intent_state(
        self, tenant_id: str, intent_id: str, state: JobState, *, error: str = ""
    ) -> None:
        """Record an intent's progress."""
        ...

    async def unfinished_intents(self) -> list[UploadIntent]:
        """Intents of every tenant still processing (start-up recovery)."""
        ...


class DataStore(ArtifactStore, ReleaseStore, DeploymentStore, JobStore, Protocol):
    """Everything the deployments use-cases store."""
