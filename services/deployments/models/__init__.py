"""Domain models of the deployments service."""

from services.deployments.models.artifacts import (
    Artifact,
    ArtifactInfo,
    ArtifactMeta,
    Update,
    UpdateFile,
)
from services.deployments.models.deployments import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    STAT_NAMES,
    Deployment,
    DeploymentStatus,
    DeploymentType,
    DeviceDeployment,
    DeviceDeploymentStatus,
    LastDeviceDeployment,
    LogMessage,
    NextRequest,
)
from services.deployments.models.jobs import GenerateJob, JobState, UploadIntent
from services.deployments.models.releases import Release, ReleaseArtifact

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "STAT_NAMES",
    "Artifact",
    "ArtifactInfo",
    "ArtifactMeta",
    "Deployment",
    "DeploymentStatus",
    "DeploymentType",
    "DeviceDeployment",
    "DeviceDeploymentStatus",
    "GenerateJob",
    "JobState",
    "LastDeviceDeployment",
    "LogMessage",
    "NextRequest",
    "Release",
    "ReleaseArtifact",
    "Update",
    "UpdateFile",
    "UploadIntent",
]
