"""Wire-only request and response models (Mender's JSON shapes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from services.deployments.app.deployments import DeviceDeploymentView
from services.deployments.app.device import Instructions
from services.deployments.app.releases import ReleaseView
from services.deployments.models import (
    STAT_NAMES,
    Artifact,
    Deployment,
    DeviceDeployment,
    LastDeviceDeployment,
)
from services.deployments.storage import Link

__all__ = [
    "AbortRequest",
    "ArtifactOut",
    "ConfigurationDeploymentRequest",
    "DeploymentIdsRequest",
    "DeploymentOut",
    "DeviceDeploymentOut",
    "DeviceWithImageOut",
    "EditArtifactRequest",
    "GroupDeploymentRequest",
    "InstructionsOut",
    "LastStatusesOut",
    "LastStatusesRequest",
    "LinkOut",
    "LogRequest",
    "NewDeploymentRequest",
    "NextV1Request",
    "NextV2Request",
    "ReleaseNotesRequest",
    "ReleaseV1Out",
    "ReleaseV2Out",
    "SoftwareOut",
    "StatusReport",
    "StorageLimitIn",
    "StorageLimitOut",
    "UploadLinkOut",
    "stats_out",
]


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- artifacts ---------------------------------------------------------------------------


class _TypeInfo(_Out):
    type: str | None


class _File(_Out):
    name: str
    checksum: str
    size: int
    date: datetime | None = None


class _UpdateOut(_Out):
    type_info: _TypeInfo
    files: list[_File]
    # mender-cli decodes `meta_data` as a list: the meta-data object, if any, as one item.
    meta_data: list[dict[str, Any]]
    metadata: dict[str, Any]


class _ArtifactInfo(_Out):
    format: str
    version: int


def _updates(artifact: Artifact) -> list[_UpdateOut]:
    return [
        _UpdateOut(
            type_info=_TypeInfo(type=u.type),
            files=[
                _File(name=f.name, checksum=f.checksum, size=f.size, date=f.date) for f in u.files
            ],
            meta_data=[u.meta_data] if u.meta_data is not None else [],
            metadata=u.meta_data or {},
        )
        for u in artifact.meta.updates
    ]


class ArtifactOut(_Out):
    """An artifact (ArtifactV1 / ArtifactV2)."""

    id: str
    name: str
    description: str
    device_types_compatible: list[str]
    info: _ArtifactInfo
    signed: bool
    updates: list[_UpdateOut]
    artifact_provides: dict[str, str] | None = None
    artifact_depends: dict[str, Any] | None = None
    clears_artifact_provides: list[str] | None = None
    size: int
    modified: datetime

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactOut:
        """Render an artifact."""
        meta = artifact.meta
        return cls(
            id=artifact.id,
            name=meta.name,
            description=artifact.description,
            device_types_compatible=meta.device_types_compatible,
            info=_ArtifactInfo(format=meta.info.format, version=meta.info.version),
            signed=meta.signed,
            updates=_updates(artifact),
            artifact_provides=meta.provides or None,
            artifact_depends={**meta.depends, "device_type": meta.device_types_compatible},
            clears_artifact_provides=meta.clears_provides or None,
            size=artifact.size,
            modified=artifact.modified,
        )


class EditArtifactRequest(_In):
    """`PUT /artifacts/{id}`."""

    description: StrictStr = ""


class LinkOut(_Out):
    """A download link."""

    uri: str
    expire: datetime
    method: str | None = None

    @classmethod
    def of(cls, link: Link, *, with_method: bool = True) -> LinkOut:
        """Render a link."""
        return cls(uri=link.uri, expire=link.expire, method=link.method if with_method else None)


class UploadLinkOut(_Out):
    """A direct-upload link."""

    id: str
    uri: str
    expire: datetime


class StorageLimitOut(_Out):
    """Storage limit and usage."""

    limit: int
    usage: int


class StorageLimitIn(_In):
    """`PUT …/limits/storage`."""

    limit: int = Field(ge=0)


# --- releases ----------------------------------------------------------------------------


class ReleaseV1Out(_Out):
    """A release in the v1 shape (capitalised keys)."""

    Name: str
    Artifacts: list[ArtifactOut]
    ArtifactsCount: int
    modified: datetime
    tags: list[str]
    notes: str

    @classmethod
    def of(cls, view: ReleaseView) -> ReleaseV1Out:
        """Render a release."""
        return cls(
            Name=view.release.name,
            Artifacts=[ArtifactOut.of(a) for a in view.artifacts],
            ArtifactsCount=len(view.artifacts),
            modified=view.release.modified,
            tags=view.release.tags,
            notes=view.release.notes,
        )


class ReleaseV2Out(_Out):
    """A release in the v2 shape."""

    name: str
    modified: datetime
    artifacts: list[ArtifactOut]
    artifacts_count: int
    tags: list[str]
    notes: str

    @classmethod
    def of(cls, view: ReleaseView) -> ReleaseV2Out:
        """Render a release."""
        return cls(
            name=view.release.name,
            modified=view.release.modified,
            artifacts=[ArtifactOut.of(a) for a in view.artifacts],
            artifacts_count=len(view.artifacts),
            tags=view.release.tags,
            notes=view.release.notes,
        )


class SoftwareOut(_Out):
    """A v1alpha1 software entry (releases only in the open-source server)."""

    name: str
    modified: datetime
    compatible_types: list[str]
    kind: Literal["release", "manifest"] = "release"
    tags: list[str]
    notes: str

    @classmethod
    def of(cls, view: ReleaseView) -> SoftwareOut:
        """Render a release as software."""
        return cls(
            name=view.release.name,
            modified=view.release.modified,
            compatible_types=view.release.device_types,
            tags=view.release.tags,
            notes=view.release.notes,
        )


class ReleaseNotesRequest(_In):
    """`PATCH /deployments/releases/{name}`."""

    notes: StrictStr | None = None


# --- deployments -------------------------------------------------------------------------


def stats_out(stats: dict[str, int]) -> dict[str, int]:
    """Every statistics key, zero when absent."""
    return {name: int(stats.get(name, 0)) for name in STAT_NAMES}


class _DeploymentStatistics(_Out):
    status: dict[str, int]
    total_size: int


class DeploymentOut(_Out):
    """A deployment (DeploymentV1 / DeploymentV2)."""

    id: str
    name: str
    artifact_name: str
    created: datetime
    finished: datetime | None = None
    status: str
    device_count: int
    max_devices: int
    artifacts: list[str]
    groups: list[str] | None = None
    type: str
    configuration: str | None = None
    filter: dict[str, Any] | None = None
    force_installation: bool | None = None
    retries: int | None = None
    statistics: _DeploymentStatistics

    @classmethod
    def of(cls, deployment: Deployment) -> DeploymentOut:
        """Render a deployment."""
        return cls(
            id=deployment.id,
            name=deployment.name,
            artifact_name=deployment.artifact_name,
            created=deployment.created,
            finished=deployment.finished,
            status=deployment.status,
            device_count=deployment.device_count,
            max_devices=deployment.max_devices,
            artifacts=deployment.artifacts,
            groups=deployment.groups or None,
            type=deployment.type,
            configuration=deployment.configuration,
            filter=deployment.filter,
            force_installation=deployment.force_installation or None,
            retries=deployment.retries or None,
            statistics=_DeploymentStatistics(
                status=stats_out(deployment.stats), total_size=deployment.total_size
            ),
        )


class _ImageMeta(_Out):
    description: str


class _MetaArtifact(_Out):
    name: str
    device_types_compatible: list[str]
    info: _ArtifactInfo
    signed: bool
    updates: list[_UpdateOut]
    artifact_provides: dict[str, str] | None = None
    artifact_depends: dict[str, Any] | None = None
    clears_artifact_provides: list[str] | None = None


class _ImageOut(_Out):
    id: str
    meta: _ImageMeta
    meta_artifact: _MetaArtifact
    size: int
    modified: datetime


class DeviceWithImageOut(_Out):
    """A device's part in a deployment."""

    id: str
    status: str
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    deleted: datetime | None = None
    device_type: str | None = None
    log: bool
    substate: str | None = None
    image: _ImageOut | None = None

    @classmethod
    def of(cls, dd: DeviceDeployment) -> DeviceWithImageOut:
        """Render a device deployment."""
        image = None
        if dd.image is not None:
            rendered = ArtifactOut.of(dd.image)
            image = _ImageOut(
                id=dd.image.id,
                meta=_ImageMeta(description=dd.image.description),
                meta_artifact=_MetaArtifact(
                    name=rendered.name,
                    device_types_compatible=rendered.device_types_compatible,
                    info=rendered.info,
                    signed=rendered.signed,
                    updates=rendered.updates,
                    artifact_provides=rendered.artifact_provides,
                    artifact_depends=rendered.artifact_depends,
                    clears_artifact_provides=rendered.clears_artifact_provides,
                ),
                size=dd.image.size,
                modified=dd.image.modified,
            )
        return cls(
            id=dd.device_id,
            status=dd.status.label,
            created=dd.created,
            started=dd.started,
            finished=dd.finished,
            deleted=dd.deleted,
            device_type=dd.device_type or None,
            log=dd.log,
            substate=dd.substate or None,
            image=image,
        )


class DeviceDeploymentOut(_Out):
    """An entry of a device's deployment history."""

    id: str
    deployment: DeploymentOut
    device: DeviceWithImageOut

    @classmethod
    def of(cls, view: DeviceDeploymentView) -> DeviceDeploymentOut:
        """Render a history entry."""
        return cls(
            id=view.device_deployment.id,
            deployment=DeploymentOut.of(view.deployment),
            device=DeviceWithImageOut.of(view.device_deployment),
        )


class NewDeploymentRequest(_In):
    """`POST /deployments`."""

    name: StrictStr
    artifact_name: StrictStr
    devices: list[StrictStr] | None = None
    all_devices: StrictBool = False
    force_installation: StrictBool = False


class GroupDeploymentRequest(_In):
    """`POST /deployments/group/{name}`."""

    name: StrictStr
    artifact_name: StrictStr
    force_installation: StrictBool = False


class AbortRequest(_In):
    """`PUT /deployments/{id}/status`."""

    status: StrictStr


class DeploymentIdsRequest(_In):
    """`POST /deployments/statistics/list`."""

    deployment_ids: list[StrictStr] = []


class ConfigurationDeploymentRequest(_In):
    """Internal: a configuration deployment for one device."""

    name: StrictStr
    configuration: dict[str, Any] | StrictStr
    retries: Annotated[StrictInt, Field(ge=0)] = 0


class LastStatusesRequest(_In):
    """Internal: last deployment statuses of devices."""

    device_ids: list[StrictStr]


class _LastStatusOut(_Out):
    device_id: str
    deployment_id: str
    device_deployment_id: str
    device_deployment_status: str


class LastStatusesOut(_Out):
    """Internal: last deployment statuses of devices."""

    device_deployment_last_statuses: list[_LastStatusOut]

    @classmethod
    def of(cls, items: list[LastDeviceDeployment]) -> LastStatusesOut:
        """Render last statuses."""
        return cls(
            device_deployment_last_statuses=[
                _LastStatusOut(
                    device_id=i.device_id,
                    deployment_id=i.deployment_id,
                    device_deployment_id=i.device_deployment_id,
                    device_deployment_status=i.status,
                )
                for i in items
            ]
        )


# --- the device API ----------------------------------------------------------------------


class NextV1Request(BaseModel):
    """`POST v1 …/next`: device type, artifact name and any other provides."""

    model_config = ConfigDict(extra="allow")

    device_type: StrictStr
    artifact_name: StrictStr


class NextV2Request(_In):
    """`POST v2 …/next`."""

    device_provides: dict[str, StrictStr]
    update_control_map: bool | None = None


class StatusReport(_In):
    """`PUT …/status`."""

    status: StrictStr
    substate: StrictStr | None = None


class _LogLine(_In):
    timestamp: datetime
    level: Annotated[StrictStr, Field(min_length=1)]
    message: Annotated[StrictStr, Field(min_length=1)]


class LogRequest(_In):
    """`PUT …/log`."""

    messages: list[_LogLine]


class _Source(_Out):
    uri: str
    expire: datetime


class _InstructionsArtifact(_Out):
    id: str | None = None
    artifact_name: str
    source: _Source
    device_types_compatible: list[str]


class InstructionsOut(_Out):
    """What the device should install."""

    id: str
    artifact: _InstructionsArtifact

    @classmethod
    def of(cls, instructions: Instructions) -> InstructionsOut:
        """Render instructions."""
        return cls(
            id=instructions.deployment_id,
            artifact=_InstructionsArtifact(
                id=instructions.artifact_id,
                artifact_name=instructions.artifact_name,
                source=_Source(uri=instructions.source.uri, expire=instructions.source.expire),
                device_types_compatible=instructions.device_types,
            ),
        )
