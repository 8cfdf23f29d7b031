"""The deployments data store: the interface the use-cases depend on.

Every method takes the tenant first; implementations confine each operation to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from common.core.outbox import Effect
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
    "DeviceDeploymentStore",
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


class ArtifactStore(Protocol):
    """Artifacts (`images`)."""

    async def record_artifact(
        self, tenant_id: str, artifact: Artifact, *, effects: Sequence[Effect] = ()
    ) -> None:
        """Insert the artifact, list it in its release, add it to the unfinished deployments
        of its name, record `effects`, atomically.

        `DuplicateArtifact` on a name/depends clash, `DuplicateId` on an id clash.
        """
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

    async def describe_artifact(
        self, tenant_id: str, artifact_id: str, description: str, modified: datetime
    ) -> Artifact | None:
        """Change the description (with the release's copy), atomically; None if absent."""
        ...

    async def forget_artifact(
        self,
        tenant_id: str,
        artifact_id: str,
        *,
        effects: Callable[[Artifact], Sequence[Effect]] = lambda _: (),
    ) -> Artifact | None:
        """Delete and return the artifact, dropping it from its release and recording the
        `effects` of the deleted artifact, atomically."""
        ...


class ReleaseStore(Protocol):
    """Releases: one document per artifact name."""

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

    async def set_release_tags(
        self, tenant_id: str, name: str, tags: list[str], *, effects: Sequence[Effect] = ()
    ) -> bool:
        """Replace the release's tags, with `effects`; False (nothing written) when there is
        no such release."""
        ...

    async def set_release_notes(
        self, tenant_id: str, name: str, notes: str, *, effects: Sequence[Effect] = ()
    ) -> bool:
        """Replace the release's notes, with `effects`; False (nothing written) when there is
        no such release."""
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
    """Deployments and their statistics."""

    async def insert_deployment(
        self,
        tenant_id: str,
        deployment: Deployment,
        *,
        checksum: str,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Insert with `effects`; `DuplicateDeployment` when an active one has the same
        checksum."""
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

    async def abort_deployment(
        self,
        tenant_id: str,
        deployment_id: str,
        *,
        now: datetime,
        effects: Sequence[Effect] = (),
    ) -> None:
        """Abort the active device deployments and finish the deployment with their counts,
        recording `effects`."""
        ...

    async def active_device_lists(self, tenant_id: str) -> dict[str, list[str]]:
        """The device list of each of a tenant's active (unfinished) deployments, by id."""
        ...

    async def unfinished_deployments(self) -> list[tuple[str, str]]:
        """(tenant, id) of every tenant's deployments that are not finished."""
        ...

    async def recount_stats(
        self, tenant_id: str, deployment_id: str
    ) -> tuple[dict[str, int], dict[str, int]] | None:
        """Recount an unfinished deployment's statistics from its device deployments.

        Returns the statistics before and after when they were wrong, else None.
        """
        ...


class DeviceDeploymentStore(Protocol):
    """Device deployments (a device's part in a deployment), their logs, last statuses."""

    async def start_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment, change: StatsChange
    ) -> tuple[DeviceDeployment, bool] | None:
        """Apply `change` while room is left and insert the device deployment, atomically.

        None when the deployment has no room left; otherwise the stored device deployment
        and whether it was created now (False: the device already had a live one, and
        nothing was changed). A device deployment that ends at once is remembered as the
        device's last status in the same transaction.
        """
        ...

    async def move_device_deployment(
        self,
        tenant_id: str,
        device_deployment: DeviceDeployment,
        *,
        status: DeviceDeploymentStatus,
        substate: str | None = None,
        now: datetime,
    ) -> DeviceDeployment | None:
        """Move from the given document's status to `status` and its count with it, atomically.

        Compare-and-set on the status; the deployment's status moves forward when due and a
        finished device deployment is remembered as the device's last status, in the same
        transaction. Returns the updated device deployment, or None if its status changed
        meanwhile.
        """
        ...

    async def restart_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> DeviceDeployment | None:
        """Put it back to pending as its next attempt, and its count with it, atomically.

        Compare-and-set on the status; None if it changed meanwhile.
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

    async def claim_job(
        self, tenant_id: str, job_id: str, *, owner: str, now: datetime, until: datetime
    ) -> GenerateJob | None:
        """Take up an unfinished job whose lease has lapsed (or that has none): it is then
        processing, held by `owner` until `until`; None when another holds it or it is over."""
        ...

    async def renew_job(self, tenant_id: str, job_id: str, *, owner: str, until: datetime) -> bool:
        """Extend `owner`'s lease on a job; False when it holds the job no longer."""
        ...

    async def finish_job(
        self, tenant_id: str, job_id: str, state: JobState, *, owner: str, error: str = ""
    ) -> bool:
        """Record a held job's outcome (done or failed); False when `owner` holds it no longer."""
        ...

    async def claimable_jobs(self, now: datetime) -> list[tuple[str, str]]:
        """(tenant, id) of every tenant's unfinished jobs whose lease has lapsed."""
        ...

    async def artifact_tenants(self, artifact_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(tenant, id) of the artifacts with these ids, whatever their tenant."""
        ...

    async def unfinished_upload_keys(self, ids: Sequence[str]) -> list[str]:
        """Object keys held by unfinished generation jobs and upload intents with these ids."""
        ...

    async def insert_intent(self, intent: UploadIntent) -> None:
        """Record a direct-upload intent."""
        ...

    async def get_intent(self, tenant_id: str, intent_id: str) -> UploadIntent | None:
        """A direct-upload intent."""
        ...

    async def claim_intent(
        self,
        tenant_id: str,
        intent_id: str,
        *,
        from_state: JobState,
        owner: str,
        now: datetime,
        until: datetime,
    ) -> UploadIntent | None:
        """Move an intent from `from_state` to processing, held by `owner` until `until`, if
        nobody holds it; None otherwise."""
        ...

    async def renew_intent(
        self, tenant_id: str, intent_id: str, *, owner: str, until: datetime
    ) -> bool:
        """Extend `owner`'s lease on an intent; False when it holds the intent no longer."""
        ...

    async def finish_intent(
        self, tenant_id: str, intent_id: str, state: JobState, *, owner: str, error: str = ""
    ) -> bool:
        """Record a held intent's outcome; False when `owner` holds it no longer."""
        ...

    async def claimable_intents(self, now: datetime) -> list[tuple[str, str]]:
        """(tenant, id) of every tenant's processing intents whose lease has lapsed."""
        ...

    async def claim_lock(self, name: str, *, owner: str, now: datetime, until: datetime) -> bool:
        """Take the lease named `name` until `until`, or keep it when `owner` holds it already;
        False while another process holds it."""
        ...


class DataStore(
    ArtifactStore, ReleaseStore, DeploymentStore, DeviceDeploymentStore, JobStore, Protocol
):
    """Everything the deployments use-cases store."""
