"""Device identity and inventory with the real client: admission, preauthorization, revocation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.api import (
    ManagementApi,
    RawDevice,
    attribute_map,
    public_pem,
    same_key,
    unique_identity,
)
from tests.e2e.conftest import AUTHORIZED, DeviceFactory
from tests.e2e.tools import MenderCli, generate_device_key
from tests.toolkit import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CLIENT_VERSION_PREFIX = "3."
REJECTED_BY_SERVER = r"authentication request rejected"
REVOCATION_WINDOW = 10.0


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _assert_unauthorized(raw: RawDevice) -> None:
    """The raw device's old token is refused by the gateway on every device API."""

    def probe() -> httpx.Response | None:
        response = raw.check_next()
        return response if response.status_code == 401 else None

    # A revocation made elsewhere reaches the gateway from deviceauth's feed within a
    # moment, so the refusal is awaited, with a read-only call (a write let through in that
    # window would change what the test checks afterwards).
    refused = wait_until(
        probe,
        timeout=REVOCATION_WINDOW,
        interval=0.5,
        what="the revoked device token refused",
    )
    assert set(refused.json()) == {"error", "request_id"}
    assert refused.json()["request_id"] == refused.headers["X-MEN-RequestID"]
    inventory = raw.put_inventory({"probe": "after"})
    assert inventory.status_code == 401, inventory.text
    assert raw.next_deployment().status_code == 401


class TestFirstContact:
    def test_pending_then_accepted_with_inventory(
        self, devices: DeviceFactory, api: ManagementApi, cli: MenderCli
    ) -> None:
        device_type = _unique("e2e-identity")
        site = _unique("lab")
        device = devices.new(
            "first",
            device_type=device_type,
            artifact_name="factory-image-1",
            inventory={"e2e_site": site, "e2e_ports": ["eth0", "eth1"]},
        )
        devices.start(device)

        pending = api.wait_for_device(device.identity, status="pending")
        assert pending["identity_data"] == device.identity
        [auth_set] = pending["auth_sets"]
        assert auth_set["status"] == "pending"
        assert auth_set["identity_data"] == device.identity
        assert same_key(auth_set["pubkey"], device.public_key_pem())
        assert AUTHORIZED not in device.log_text()
        assert not device.bootstrap()

        device_id = devices.admit(device)
        assert device_id == pending["id"]
        assert device.bootstrap()
        accepted = api.devauth_device(device_id)
        assert accepted is not None
        assert accepted["status"] == "accepted"
        assert [a["status"] for a in accepted["auth_sets"]] == ["accepted"]

        seen = api.wait_for_attributes(
            device_id,
            {
                ("identity", "mac"): device.identity["mac"],
                ("identity", "serial"): device.identity["serial"],
                ("identity", "status"): "accepted",
                ("inventory", "device_type"): device_type,
                ("inventory", "artifact_name"): "factory-image-1",
                ("inventory", "e2e_site"): site,
                ("inventory", "e2e_ports"): ["eth0", "eth1"],
            },
        )
        assert str(seen[("inventory", "mender_client_version")]).startswith(CLIENT_VERSION_PREFIX)

        listed = api.inventory_devices(**{"inventory/e2e_site": site})
        assert [d["id"] for d in listed] == [device_id]
        assert attribute_map(listed[0])[("inventory", "device_type")] == device_type

        by_mac = api.search(
            [
                {
                    "scope": "identity",
                    "attribute": "mac",
                    "type": "$eq",
                    "value": device.identity["mac"],
                }
            ]
        )
        assert [d["id"] for d in by_mac] == [device_id]
        by_type = api.search(
            [
                {
                    "scope": "inventory",
                    "attribute": "device_type",
                    "type": "$eq",
                    "value": device_type,
                },
                {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"},
            ]
        )
        assert [d["id"] for d in by_type] == [device_id]
        assert attribute_map(by_type[0])[("identity", "serial")] == device.identity["serial"]

        entry = next(e for e in cli.devices_list(detail=1).split("-" * 80) if device_id in e)
        assert "Status: accepted" in entry
        assert f"MAC address: {device.identity['mac']}" in entry


class TestPreauthorization:
    def test_preauthorized_device_is_accepted_on_first_contact(
        self, devices: DeviceFactory, api: ManagementApi
    ) -> None:
        key = generate_device_key("ecdsa")
        identity = unique_identity("preauth")
        device_id = api.preauthorize(identity, public_pem(key))
        preauthorized = api.devauth_device(device_id)
        assert preauthorized is not None
        assert preauthorized["status"] == "preauthorized"
        api.wait_for_attributes(device_id, {("identity", "status"): "preauthorized"})

        device = devices.new("preauth", identity=identity, key=key)
        devices.start(device)
        device.wait_for_log(AUTHORIZED, timeout=30)

        accepted = api.devauth_device(device_id)
        assert accepted is not None
        assert accepted["status"] == "accepted"
        [auth_set] = accepted["auth_sets"]
        assert auth_set["status"] == "accepted"
        assert same_key(auth_set["pubkey"], public_pem(key))
        assert api.find_device(identity) == accepted
        api.wait_for_attributes(
            device_id,
            {
                ("identity", "status"): "accepted",
                ("identity", "mac"): identity["mac"],
                ("inventory", "device_type"): "test-device",
            },
        )

    def test_other_key_stays_pending(self, devices: DeviceFactory, api: ManagementApi) -> None:
        identity = unique_identity("preauth-other")
        device_id = api.preauthorize(identity, public_pem(generate_device_key("ed25519")))

        device = devices.new("preauth-other", identity=identity)  # generates its own RSA key
        devices.start(device)

        def two_auth_sets() -> dict[str, Any] | None:
            device = api.devauth_device(device_id)
            return device if device is not None and len(device["auth_sets"]) == 2 else None

        found = wait_until(
            two_auth_sets,
            what="a second auth set with the client's own key",
        )
        statuses = {a["status"] for a in found["auth_sets"]}
        assert statuses == {"preauthorized", "pending"}
        assert not device.bootstrap()
        assert AUTHORIZED not in device.log_text()


class TestRevocation:
    @pytest.fixture
    def raw_device(self, api: ManagementApi) -> Iterator[Callable[[], tuple[RawDevice, str]]]:
        """An accepted device driven by hand (its JWT in `.token`) and its id."""
        made: list[RawDevice] = []

        def make() -> tuple[RawDevice, str]:
            raw = RawDevice(api.base_url, unique_identity("raw"))
            made.append(raw)
            assert raw.auth_request().status_code == 401
            api.accept(api.wait_for_device(raw.identity, status="pending"))
            assert raw.auth_request().status_code == 200
            assert raw.put_inventory({"probe": "before"}).status_code == 200
            accepted = api.find_device(raw.identity)
            assert accepted is not None
            return raw, str(accepted["id"])

        yield make
        for raw in made:
            raw.close()

    def test_rejected_device_is_refused(
        self,
        devices: DeviceFactory,
        api: ManagementApi,
        raw_device: Callable[[], tuple[RawDevice, str]],
    ) -> None:
        device = devices.new("reject")
        devices.start(device)
        device_id = devices.admit(device)
        raw, raw_id = raw_device()

        for did in (device_id, raw_id):
            found = api.devauth_device(did)
            assert found is not None
            api.set_auth_status(did, found["auth_sets"][0]["id"], "rejected")

        _assert_unauthorized(raw)
        assert raw.auth_request().status_code == 401
        since = len(device.log_text())
        device.send_inventory()
        device.wait_for_log(REJECTED_BY_SERVER, since=since)
        assert "Device unauthorized" in device.log_text()[since:]
        assert not device.bootstrap()

        for did in (device_id, raw_id):
            found = api.devauth_device(did)
            assert found is not None
            assert found["status"] == "rejected"
            api.wait_for_attributes(did, {("identity", "status"): "rejected"})

    def test_decommissioned_device_is_refused(
        self,
        devices: DeviceFactory,
        api: ManagementApi,
        raw_device: Callable[[], tuple[RawDevice, str]],
    ) -> None:
        device = devices.new("decommission")
        devices.start(device)
        device_id = devices.admit(device)
        api.wait_for_attributes(device_id, {("inventory", "device_type"): "test-device"})
        raw, raw_id = raw_device()

        since = len(device.log_text())
        for did in (device_id, raw_id):
            api.decommission(did)

        _assert_unauthorized(raw)
        for did in (device_id, raw_id):
            api.wait_gone_from_inventory(did, timeout=15.0)
            assert api.devauth_device(did) is None

        # The client's old token is refused too; it asks again and comes back as a new,
        # pending device (a decommissioned identity starts over).
        device.send_inventory()
        device.wait_for_log(REJECTED_BY_SERVER, since=since)
        again = api.wait_for_device(device.identity, status="pending")
        assert again["id"] != device_id
        assert not device.bootstrap()
