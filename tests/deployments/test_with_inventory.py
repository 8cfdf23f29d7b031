"""Deployments resolved through the real inventory service (its internal API over HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.deployments.config import Settings
from services.deployments.main import create_app
from services.inventory.config import Settings as InventorySettings
from services.inventory.main import create_app as create_inventory_app
from tests.conftest import ClientFactory
from tests.deployments.flows import DEPLOYMENTS, create_deployment
from tests.deployments.helpers import ArtifactFactory, multipart_body, user_headers
from tests.toolkit import LiveServer


@pytest.fixture
async def inventory_url(mongo_url: str, db_name: str) -> AsyncIterator[str]:
    """The inventory service on a loopback port, with accepted, pending and grouped devices."""
    app = create_inventory_app(
        InventorySettings(mongo_url=mongo_url, mongo_db=f"{db_name}_inv", dev_mode=True)
    )
    server = LiveServer(app, lifespan="on")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for device_id, status in (
                ("acc-1", "accepted"),
                ("acc-2", "accepted"),
                ("pen", "pending"),
            ):
                response = await client.post(
                    "/api/internal/v1/inventory/tenants//devices",
                    json={
                        "id": device_id,
                        "attributes": [{"name": "status", "scope": "identity", "value": status}],
                    },
                )
                assert response.status_code == 201, response.text
            for device_id in ("acc-2", "pen"):
                response = await client.put(
                    f"/api/management/v1/inventory/devices/{device_id}/group",
                    json={"group": "lab"},
                    headers=user_headers(),
                )
                assert response.status_code == 204, response.text
        yield server.url
    finally:
        await server.stop()


async def test_group_and_all_devices(
    asgi_client: ClientFactory,
    settings: Settings,
    inventory_url: str,
    artifacts_factory: ArtifactFactory,
) -> None:
    configured = settings.model_copy(update={"inventory_addr": inventory_url})
    async with asgi_client(create_app(configured)) as client:
        body, headers = multipart_body([], "artifact", artifacts_factory.make("app"))
        upload = await client.post(
            "/api/management/v1/deployments/artifacts",
            content=body,
            headers={**headers, **user_headers()},
        )
        assert upload.status_code == 201
        everyone = await create_deployment(
            client, name="all", artifact_name="app", all_devices=True
        )
        group = await create_deployment(client, name="lab", artifact_name="app", group="lab")
        single = await create_deployment(client, name="one", artifact_name="app", devices=["acc-2"])

        async def device_list(deployment_id: str) -> list[str]:
            response = await client.get(
                f"{DEPLOYMENTS}/{deployment_id}/device_list", headers=user_headers()
            )
            return sorted(response.json())

        assert await device_list(everyone) == ["acc-1", "acc-2"]
        assert await device_list(group) == ["acc-2"]
        shown = await client.get(f"{DEPLOYMENTS}/{single}", headers=user_headers())
        assert shown.json()["groups"] == ["lab"]
        empty = await client.post(
            f"{DEPLOYMENTS}/group/nobody",
            json={"name": "none", "artifact_name": "app"},
            headers=user_headers(),
        )
        assert empty.status_code == 400
