"""Dependencies of the routes: the use-cases built by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from common.web.app import services_of
from services.deviceconnect.app.connections import Connections
from services.deviceconnect.app.devices import DevicesApp
from services.deviceconnect.app.filetransfer import FileTransferApp
from services.deviceconnect.app.playback import PlaybackApp
from services.deviceconnect.app.sessions import SessionsApp
from services.deviceconnect.config import Settings

__all__ = [
    "ConnectionsDep",
    "DevicesAppDep",
    "FileTransferAppDep",
    "PlaybackAppDep",
    "Services",
    "ServicesDep",
    "SessionsAppDep",
    "SettingsDep",
]


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: settings, the connections of this instance, the use-cases."""

    settings: Settings
    connections: Connections
    devices: DevicesApp
    sessions: SessionsApp
    transfers: FileTransferApp
    playback: PlaybackApp


def _services(conn: HTTPConnection) -> Services:
    # HTTPConnection, not Request: the websocket routes use these dependencies too.
    return services_of(conn.app, Services)


ServicesDep = Annotated[Services, Depends(_services)]


def _settings(services: ServicesDep) -> Settings:
    return services.settings


def _connections(services: ServicesDep) -> Connections:
    return services.connections


def _devices(services: ServicesDep) -> DevicesApp:
    return services.devices


def _sessions(services: ServicesDep) -> SessionsApp:
    return services.sessions


def _transfers(services: ServicesDep) -> FileTransferApp:
    return services.transfers


def _playback(services: ServicesDep) -> PlaybackApp:
    return services.playback


SettingsDep = Annotated[Settings, Depends(_settings)]
ConnectionsDep = Annotated[Connections, Depends(_connections)]
DevicesAppDep = Annotated[DevicesApp, Depends(_devices)]
SessionsAppDep = Annotated[SessionsApp, Depends(_sessions)]
FileTransferAppDep = Annotated[FileTransferApp, Depends(_transfers)]
PlaybackAppDep = Annotated[PlaybackApp, Depends(_playback)]
