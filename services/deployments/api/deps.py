"""Dependencies of the routes: the use-cases built by the lifespan, the caller, helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from common.errors import BadRequest, PayloadTooLarge
from services.deployments.app.artifacts import ArtifactsApp
from services.deployments.app.deployments import DeploymentsApp
from services.deployments.app.downloads import DownloadsApp
from services.deployments.app.jobs import DirectUploadsApp, GenerateApp
from services.deployments.app.releases import ReleasesApp
from services.deployments.app.tasks import BackgroundTasks
from services.deployments.config import Settings
from services.deployments.storage import Storage
from services.deployments.storage.signing import URLSigner

__all__ = [
    "ArtifactsAppDep",
    "DeploymentsAppDep",
    "DownloadsAppDep",
    "ExternalURL",
    "GenerateAppDep",
    "ReleasesAppDep",
    "Services",
    "ServicesDep",
    "SettingsDep",
    "UploadsAppDep",
    "read_json",
]

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: settings, storage and the use-cases."""

    settings: Settings
    storage: Storage
    signer: URLSigner
    tasks: BackgroundTasks
    artifacts: ArtifactsApp
    releases: ReleasesApp
    deployments: DeploymentsApp
    generate: GenerateApp
    uploads: DirectUploadsApp
    downloads: DownloadsApp


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


def _settings(services: ServicesDep) -> Settings:
    return services.settings


def _artifacts(services: ServicesDep) -> ArtifactsApp:
    return services.artifacts


def _releases(services: ServicesDep) -> ReleasesApp:
    return services.releases


def _deployments(services: ServicesDep) -> DeploymentsApp:
    return services.deployments


def _generate(services: ServicesDep) -> GenerateApp:
    return services.generate


def _uploads(services: ServicesDep) -> DirectUploadsApp:
    return services.uploads


def _downloads(services: ServicesDep) -> DownloadsApp:
    return services.downloads


SettingsDep = Annotated[Settings, Depends(_settings)]
ArtifactsAppDep = Annotated[ArtifactsApp, Depends(_artifacts)]
ReleasesAppDep = Annotated[ReleasesApp, Depends(_releases)]
DeploymentsAppDep = Annotated[DeploymentsApp, Depends(_deployments)]
GenerateAppDep = Annotated[GenerateApp, Depends(_generate)]
UploadsAppDep = Annotated[DirectUploadsApp, Depends(_uploads)]
DownloadsAppDep = Annotated[DownloadsApp, Depends(_downloads)]


def _external_url(request: Request, settings: SettingsDep) -> str:
    """Where devices reach this service: the setting, else the gateway's forwarded headers."""
    if settings.presign_url_base:
        return settings.presign_url_base.rstrip("/")
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    if host:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        return f"{proto or request.url.scheme}://{host}"
    return str(request.base_url).rstrip("/")


ExternalURL = Annotated[str, Depends(_external_url)]


async def read_json(request: Request, model: type[_M], *, limit: int, required: bool = True) -> _M:
    """Read a JSON body under a size limit (routes whose prefix streams) and validate it."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    if not body.strip() and not required:
        return model.model_validate({})
    try:
        document: Any = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"failed to decode request body: {exc}") from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise BadRequest(f"invalid request: {problems}") from None
