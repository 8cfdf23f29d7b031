"""Small API helpers for the deployment tests."""

from __future__ import annotations

from typing import Any, Final

import httpx

from tests.deployments.helpers import DEVICE_TYPE, device_headers, user_headers

__all__ = [
    "DEPLOYMENTS",
    "NEXT_V1",
    "NEXT_V2",
    "create_deployment",
    "poll",
    "report",
    "stats_of",
]

DEPLOYMENTS: Final = "/api/management/v1/deployments/deployments"
NEXT_V1: Final = "/api/devices/v1/deployments/device/deployments/next"
NEXT_V2: Final = "/api/devices/v2/deployments/device/deployments/next"


async def create_deployment(
    client: httpx.AsyncClient, *, tenant: str = "", group: str | None = None, **body: Any
) -> str:
    """Create a deployment and return its id."""
    url = f"{DEPLOYMENTS}/group/{group}" if group else DEPLOYMENTS
    response = await client.post(url, json=body, headers=user_headers(tenant))
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


async def poll(
    client: httpx.AsyncClient,
    device_id: str,
    *,
    artifact_name: str = "installed-0.1",
    device_type: str = DEVICE_TYPE,
    tenant: str = "",
    **provides: str,
) -> httpx.Response:
    """`POST v2 …/next` as the Mender client sends it."""
    return await client.post(
        NEXT_V2,
        json={
            "device_provides": {
                "artifact_name": artifact_name,
                "device_type": device_type,
                **provides,
            },
            "update_control_map": True,
        },
        headers=device_headers(device_id, tenant),
    )


async def report(
    client: httpx.AsyncClient, device_id: str, deployment_id: str, status: str, tenant: str = ""
) -> httpx.Response:
    """`PUT …/status`."""
    return await client.put(
        f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status",
        json={"status": status},
        headers=device_headers(device_id, tenant),
    )


async def stats_of(
    client: httpx.AsyncClient, deployment_id: str, tenant: str = ""
) -> dict[str, int]:
    """A deployment's statistics."""
    response = await client.get(
        f"{DEPLOYMENTS}/{deployment_id}/statistics", headers=user_headers(tenant)
    )
    assert response.status_code == 200, response.text
    stats: dict[str, int] = response.json()
    return stats
