"""deployments' internal API, as deviceconfig uses it: configuration deployments."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

from common.core.peers import PeerClient
from services.deviceconfig.models import Configuration

__all__ = ["DeploymentsClient", "HttpDeploymentsClient"]


class DeploymentsClient(Protocol):
    """What deviceconfig asks deployments."""

    async def create_configuration_deployment(
        self,
        tenant_id: str,
        *,
        deployment_id: str,
        device_id: str,
        name: str,
        configuration: Configuration,
        retries: int,
    ) -> None:
        """Create a deployment of `configuration` to one device."""
        ...


class HttpDeploymentsClient(PeerClient):
    """deployments' internal API over httpx."""

    peer_name = "deployments"

    async def create_configuration_deployment(
        self,
        tenant_id: str,
        *,
        deployment_id: str,
        device_id: str,
        name: str,
        configuration: Configuration,
        retries: int,
    ) -> None:
        """`POST …/configuration/deployments/{id}/devices/{device}`.

        The id is new, so a 409 (the id exists) means an earlier attempt of this very call
        was carried out and only its answer was lost.
        """
        path = (
            f"/api/internal/v1/deployments/tenants/{quote(tenant_id, safe='')}"
            f"/configuration/deployments/{quote(deployment_id, safe='')}"
            f"/devices/{quote(device_id, safe='')}"
        )
        await self.request(
            "POST",
            path,
            json={"name": name, "configuration": configuration, "retries": retries},
            expect=(201, 409),
        )
