"""An inventory outage: deviceauth keeps serving and its outbox catches up afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

import pytest

from common.localstack.launcher import DATABASE, Stack
from common.localstack.supervisor import Supervisor
from tests.e2e.api import ManagementApi, RawDevice, unique_identity
from tests.toolkit import wait_until

pytestmark = pytest.mark.timeout(120)

INVENTORY: Final = "inventory"
# Answered "at once": well below the peer timeout a blocked call to inventory would take.
PROMPT: Final = 2.0
# Retries back off exponentially from 0.5 s; a short outage is caught up in a few seconds.
CATCH_UP: Final = 20.0


class _Outage:
    """Stops and restarts one service of the stack; restarts it at teardown if still down."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack = stack
        self.name = name
        self.down = False

    def begin(self) -> None:
        self.stack.stop_process(self.name)
        self.down = True

    def end(self) -> None:
        self.stack.start_process(self.name)
        self.down = False


@pytest.fixture
def inventory_outage(stack: Stack) -> Iterator[_Outage]:
    """Control over an inventory outage; inventory is always running again afterwards."""
    outage = _Outage(stack, INVENTORY)
    try:
        yield outage
    finally:
        if outage.down:
            outage.end()


@pytest.fixture
def raw_device(stack: Stack) -> Iterator[RawDevice]:
    """A device speaking the device API by hand, with a fresh identity."""
    device = RawDevice(stack.url, unique_identity("outage"))
    try:
        yield device
    finally:
        device.close()


class TestInventoryOutage:
    def test_decommission_is_delivered_after_inventory_returns(
        self, api: ManagementApi, raw_device: RawDevice, inventory_outage: _Outage
    ) -> None:
        assert raw_device.auth_request().status_code == 401
        pending = api.wait_for_device(raw_device.identity, status="pending")
        api.accept(pending)
        assert raw_device.auth_request().status_code == 200
        device_id = pending["id"]
        api.wait_for_attributes(
            device_id,
            {("identity", "status"): "accepted", **_identity_attributes(raw_device)},
        )

        inventory_outage.begin()
        started = time.monotonic()
        response = api.decommission(device_id)
        assert time.monotonic() - started < PROMPT
        assert response.status_code in (202, 204)
        assert response.content == b""
        wait_until(
            lambda: raw_device.check_next().status_code == 401,
            timeout=10.0,
            interval=0.5,
            what="the decommissioned device's token refused",
        )
        unavailable = api.http.get(f"/api/management/v1/inventory/devices/{device_id}")
        assert unavailable.status_code in (502, 503)
        assert set(unavailable.json()) == {"error", "request_id"}

        inventory_outage.end()
        api.wait_gone_from_inventory(device_id, timeout=CATCH_UP)
        assert api.devauth_device(device_id) is None

    def test_first_contact_while_inventory_is_down(
        self, api: ManagementApi, raw_device: RawDevice, inventory_outage: _Outage
    ) -> None:
        inventory_outage.begin()
        started = time.monotonic()
        refused = raw_device.auth_request()
        assert time.monotonic() - started < PROMPT
        assert refused.status_code == 401
        assert set(refused.json()) == {"error", "request_id"}
        pending = api.wait_for_device(raw_device.identity, status="pending")
        [auth_set] = pending["auth_sets"]
        assert auth_set["identity_data"] == raw_device.identity

        inventory_outage.end()
        api.wait_for_attributes(
            pending["id"],
            {("identity", "status"): "pending", **_identity_attributes(raw_device)},
            timeout=CATCH_UP,
        )
        found = api.search(
            [
                {
                    "scope": "identity",
                    "attribute": "serial",
                    "type": "$eq",
                    "value": raw_device.identity["serial"],
                }
            ]
        )
        assert [d["id"] for d in found] == [pending["id"]]


class TestDeliberateOutage:
    def test_a_stopped_service_is_not_restarted(
        self, stack: Stack, inventory_outage: _Outage
    ) -> None:
        supervisor = Supervisor(stack, first=DATABASE)
        inventory_outage.begin()
        supervisor.check()
        # Stopped on purpose: neither running nor reported down, so never restarted.
        assert INVENTORY not in stack.pids()
        assert stack.down() == {}

        inventory_outage.end()
        assert INVENTORY in stack.pids()
        assert stack.down() == {}


def _identity_attributes(device: RawDevice) -> dict[tuple[str, str], str]:
    return {("identity", name): value for name, value in device.identity.items()}
