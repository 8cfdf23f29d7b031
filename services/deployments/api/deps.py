"""Dependencies of the routes: the use-cases built by the lifespan, the caller, helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from common.web.app import services_dependency
from services.deployments.app.artifacts import ArtifactsApp
from services.deployments.app.deployments import DeploymentsApp
from services.deployments.app.device import DeviceDeploymentsApp
from services.deployments.app.downloads import DownloadsApp
from services.deployments.app.jobs import DirectUploadsApp, GenerateApp
from services.deployments.app.reach import Reach
from services.deployments.app.releases import ReleasesApp
from services.deployments.app.tasks import BackgroundTasks
from services.deployments.config import Settings
from services.deployments.storage import Storage
from services.deployments.storage.signing import URLSigner

__all__ = [
    "ArtifactsAppDep",
    "DeploymentsAppDep",
    "DeviceDeploymentsAppDep",
    "DownloadsAppDep",
    "ExternalURL",
    "GenerateAppDep",
    "ReleasesAppDep",
    "Services",
    "ServicesDep",
    "SettingsDep",
    "UploadsAppDep",
]


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
    device: DeviceDeploymentsApp
    # What the idle-poll path knows of the active deployments.
    reach: Reach
    generate: GenerateApp
    uploads: DirectUploadsApp
    downloads: DownloadsApp


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]

# The dependencies below are coroutine functions although they never wait: FastAPI would
# run plain functions in a worker thread, a hop that costs more than an idle poll's work.


async def _settings(services: ServicesDep) -> Settings:
    return services.settings


async def _artifacts(services: ServicesDep) -> ArtifactsApp:
    return services.artifacts


async def _releases(services: ServicesDep) -> ReleasesApp:
    return services.releases


async def _deployments(services: ServicesDep) -> DeploymentsApp:
    return services.deployments


async def _device(services: ServicesDep) -> DeviceDeploymentsApp:
    return services.device


async def _generate(services: ServicesDep) -> GenerateApp:
    return services.generate


async def _uploads(services: ServicesDep) -> DirectUploadsApp:
    return services.uploads


async def _downloads(services: ServicesDep) -> DownloadsApp:
    return services.downloads


SettingsDep = Annotated[Settings, Depends(_settings)]
ArtifactsAppDep = Annotated[ArtifactsApp, Depends(_artifacts)]
ReleasesAppDep = Annotated[ReleasesApp, Depends(_releases)]
DeploymentsAppDep = Annotated[DeploymentsApp, Depends(_deployments)]
DeviceDeploymentsAppDep = Annotated[DeviceDeploymentsApp, Depends(_device)]
GenerateAppDep = Annotated[GenerateApp, Depends(_generate)]
UploadsAppDep = Annotated[DirectUploadsApp, Depends(_uploads)]
DownloadsAppDep = Annotated[DownloadsApp, Depends(_downloads)]


async def _external_url(request: Request, settings: SettingsDep) -> str:
    """Where devices reach this service: the setting, else the gateway's forwarded headers."""
    if settings.presign_url_base:
        return settings.presign_url_base.rstrip("/")
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    if host:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        return f"{proto or request.url.scheme}://{host}"
    return str(request.base_url).rstrip("/")


ExternalURL = Annotated[str, Depends(_external_url)]
