"""The deployments service's domain errors, with Mender's status codes and messages."""

from __future__ import annotations

from typing import Any, Final

from common.core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    UnprocessableEntity,
)
from common.core.requestid import current_request_id

__all__ = [
    "MSG_NOT_FOUND",
    "ArtifactConflict",
    "ArtifactInUse",
    "ArtifactTooLarge",
    "DeploymentAborted",
    "DeploymentAlreadyFinished",
    "DeploymentNotFound",
    "DeviceDecommissioned",
    "ImageUsedInDeployment",
    "InvalidArtifact",
    "NoArtifact",
    "NoDevices",
]

MSG_NOT_FOUND: Final = "Resource not found"


class InvalidArtifact(BadRequest):
    """The uploaded file is not a valid Mender artifact (400)."""


class ArtifactTooLarge(PayloadTooLarge):
    """The artifact exceeds the size limit (413)."""

    def __init__(self) -> None:
        super().__init__("Artifact file too large")


class ArtifactConflict(Conflict):
    """An artifact with the same name and overlapping depends exists (409, Mender's body)."""

    def __init__(self, conflict: dict[str, Any]) -> None:
        message = "an artifact with the same name and depends already exists"
        body: dict[str, Any] = {"error": message, "request_id": current_request_id()}
        if conflict:
            body["metadata"] = {"conflict": conflict}
        super().__init__(message, body=body)


class ArtifactInUse(Conflict):
    """The artifact is used by an active deployment (409)."""

    def __init__(self) -> None:
        super().__init__("Artifact is used in active deployment")


class ImageUsedInDeployment(UnprocessableEntity):
    """The artifact was already deployed, so it may not be edited (422)."""

    def __init__(self) -> None:
        super().__init__("Image has already been used in deployment")


class NoArtifact(UnprocessableEntity):
    """No artifact has the deployment's artifact name (422)."""

    def __init__(self) -> None:
        super().__init__("No artifact for the deployment")


class NoDevices(BadRequest):
    """The group or all-devices query found no device (400)."""

    def __init__(self) -> None:
        super().__init__("No devices for the deployment")


class DeploymentNotFound(NotFound):
    """No such deployment (404)."""

    def __init__(self) -> None:
        super().__init__("Deployment not found")


class DeploymentAlreadyFinished(UnprocessableEntity):
    """Aborting a finished deployment (422)."""

    def __init__(self) -> None:
        super().__init__("Deployment already finished")


class DeploymentAborted(Conflict):
    """A status report for an aborted device deployment (409)."""

    def __init__(self) -> None:
        super().__init__("Deployment aborted")


class DeviceDecommissioned(Conflict):
    """A status report for a decommissioned device (409)."""

    def __init__(self) -> None:
        super().__init__("Device decommissioned")
