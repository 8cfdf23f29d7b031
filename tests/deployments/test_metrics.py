"""deployments' `/metrics`: polls answered from memory or the database, per route template."""

from __future__ import annotations

from tests.deployments.conftest import Service
from tests.deployments.flows import create_deployment, poll
from tests.deployments.helpers import ArtifactFactory
from tests.toolkit import Scrape

_NEXT_ROUTE = "/api/devices/v2/deployments/device/deployments/next"
_POLLS = "fleetport_deployments_polls_total"
_OPS = "fleetport_db_operations_per_request"


async def _scrape(service: Service) -> Scrape:
    return Scrape.of(await service.client.get("/metrics"))


class TestPollMetrics:
    async def test_idle_polls_from_memory_touch_no_database(self, service: Service) -> None:
        await poll(service.client, "warm-up")  # loads the tenant's snapshot
        before = await _scrape(service)
        for device in ("a", "b", "c"):
            assert (await poll(service.client, device)).status_code == 204
        after = await _scrape(service)
        assert after.value(_POLLS, answered_from="memory") == (
            before.value(_POLLS, answered_from="memory") + 3
        )
        assert after.value(_POLLS, answered_from="database") == before.value(
            _POLLS, answered_from="database"
        )
        idle = {"route": _NEXT_ROUTE, "method": "POST", "status": "204"}
        count = "fleetport_http_request_duration_seconds_count"
        assert after.value(count, **idle) == before.value(count, **idle) + 3
        assert after.value(f"{_OPS}_count", route=_NEXT_ROUTE) == (
            before.value(f"{_OPS}_count", route=_NEXT_ROUTE) + 3
        )
        assert after.value(f"{_OPS}_sum", route=_NEXT_ROUTE) == before.value(
            f"{_OPS}_sum", route=_NEXT_ROUTE
        )

    async def test_listed_devices_are_answered_from_the_database(
        self, service: Service, artifacts_factory: ArtifactFactory
    ) -> None:
        await service.upload(artifacts_factory.make("app-2.0"))
        await create_deployment(service.client, name="x", artifact_name="app-2.0", devices=["d"])
        before = await _scrape(service)
        assert (await poll(service.client, "d")).status_code == 200
        after = await _scrape(service)
        assert after.value(_POLLS, answered_from="database") == (
            before.value(_POLLS, answered_from="database") + 1
        )
        assert after.value(f"{_OPS}_sum", route=_NEXT_ROUTE) > before.value(
            f"{_OPS}_sum", route=_NEXT_ROUTE
        )
