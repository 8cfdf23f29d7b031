"""Typed clients of the peers deviceconfig calls."""

from services.deviceconfig.clients.deployments import DeploymentsClient, HttpDeploymentsClient
from services.deviceconfig.clients.deviceconnect import (
    DeviceconnectClient,
    HttpDeviceconnectClient,
)

__all__ = [
    "DeploymentsClient",
    "DeviceconnectClient",
    "HttpDeploymentsClient",
    "HttpDeviceconnectClient",
]
