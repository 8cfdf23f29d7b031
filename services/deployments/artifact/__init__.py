"""Mender artifacts: a streaming reader that verifies them and a writer that builds them.

A pure library of the deployments service: it knows tar, the compressions and the artifact
format, and nothing of the service's API, use-cases, storage or database.
"""

from services.deployments.artifact.errors import ArtifactError
from services.deployments.artifact.meta import ArtifactMeta, Update, UpdateFile
from services.deployments.artifact.reader import MAX_HEADER_SIZE, ArtifactParser
from services.deployments.artifact.writer import (
    CONFIGURE_PROVIDES,
    CONFIGURE_TYPE,
    PAYLOAD_FILE_NAME,
    PayloadFile,
    write_artifact,
    write_configuration_artifact,
    write_single_file_artifact,
)

__all__ = [
    "CONFIGURE_PROVIDES",
    "CONFIGURE_TYPE",
    "MAX_HEADER_SIZE",
    "PAYLOAD_FILE_NAME",
    "ArtifactError",
    "ArtifactMeta",
    "ArtifactParser",
    "PayloadFile",
    "Update",
    "UpdateFile",
    "write_artifact",
    "write_configuration_artifact",
    "write_single_file_artifact",
]
