"""Device configuration through the gateway: the web UI's Configuration tab, the device's
side of it, and deviceauth's provisioning and decommissioning reaching deviceconfig."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Final

import httpx
import pytest

from common.localstack.launcher import Stack
from services.deployments.artifact import ArtifactParser
from tests.e2e.api import DEVICECONFIG, ManagementApi, RawDevice, accepted_device
from tests.toolkit import wait_until

pytestmark = pytest.mark.timeout(120)

DEPLOYMENTS: Final = "/api/management/v1/deployments/deployments"
# What the web UI's Configuration tab saves (it deploys with `{"retries": 0}`).
EDITED: Final = {"timezone": "Europe/Oslo", "ntp_server": "pool.ntp.org", "empty": ""}


@pytest.fixture
def device(stack: Stack, api: ManagementApi) -> Iterator[tuple[RawDevice, str]]:
    """An accepted device holding a token, and its id."""
    with accepted_device(api, stack.url, "config") as found:
        yield found


class TestWebUiConfigurationTab:
    def test_the_calls_it_makes(self, api: ManagementApi, device: tuple[RawDevice, str]) -> None:
        _, device_id = device
        # deviceauth's outbox has provisioned the accepted device in deviceconfig.
        shown = api.wait_for_configuration(device_id, configured={}, reported={})
        assert set(shown) == {"id", "configured", "reported", "updated_ts"}

        # The tab's "Save and apply": PUT the configuration, then POST …/deploy.
        saved = api.http.put(f"{DEVICECONFIG}/{device_id}", json=EDITED)
        assert saved.status_code == 204
        assert saved.headers["X-MEN-RequestID"]
        deployed = api.http.post(f"{DEVICECONFIG}/{device_id}/deploy", json={"retries": 0})
        assert deployed.status_code == 200, deployed.text
        deployment_id = deployed.json()["deployment_id"]

        # It reloads the configuration, then follows the deployment it names.
        reloaded = api.http.get(f"{DEVICECONFIG}/{device_id}")
        assert reloaded.status_code == 200
        body = reloaded.json()
        assert body["configured"] == EDITED
        assert body["reported"] == {}
        assert body["deployment_id"] == deployment_id
        followed = api.http.get(f"{DEPLOYMENTS}/{deployment_id}")
        assert followed.status_code == 200
        deployment = followed.json()
        assert deployment["type"] == "configuration"
        assert deployment["status"] == "pending"
        assert json.loads(deployment["configuration"]) == EDITED
        # The tab only follows a deployment created after the configuration was changed.
        created = datetime.fromisoformat(deployment["created"])
        assert created > datetime.fromisoformat(body["updated_ts"])

    def test_unknown_device(self, api: ManagementApi) -> None:
        response = api.http.get(f"{DEVICECONFIG}/00000000-0000-4000-8000-000000000000")
        assert response.status_code == 404
        assert response.json() == {
            "error": "device does not exist",
            "request_id": response.headers["X-MEN-RequestID"],
        }


class TestDeviceSide:
    def test_device_reads_installs_and_reports(
        self, stack: Stack, api: ManagementApi, device: tuple[RawDevice, str]
    ) -> None:
        raw, device_id = device
        api.wait_for_configuration(device_id)
        api.set_configuration(device_id, EDITED)
        deployment_id = api.deploy_configuration(device_id, retries=1)

        desired = raw.get_configuration()
        assert desired.status_code == 200
        assert desired.json() == EDITED

        instructions = raw.next_deployment()
        assert instructions.status_code == 200, instructions.text
        assert instructions.json()["id"] == deployment_id
        link = instructions.json()["artifact"]["source"]["uri"]
        assert link.startswith(stack.url + "/api/devices/v1/deployments/download/configuration/")
        download = httpx.get(link)  # a signed link: no token
        assert download.status_code == 200
        assert download.headers["Content-Type"] == "application/vnd.mender-artifact"
        parser = ArtifactParser()
        parser.feed(download.content)
        [payload] = parser.finish().updates
        assert (payload.type, payload.meta_data) == ("mender-configure", [EDITED])

        assert raw.report_configuration(EDITED).status_code == 204
        shown = api.wait_for_configuration(device_id, reported=EDITED)
        assert shown["configured"] == shown["reported"] == EDITED
        assert "reported_ts" in shown

    def test_user_token_is_not_a_device_token(
        self, api: ManagementApi, device: tuple[RawDevice, str]
    ) -> None:
        response = api.http.get("/api/devices/v1/deviceconfig/configuration")
        assert response.status_code == 401
        assert set(response.json()) == {"error", "request_id"}


class TestDecommission:
    def test_configuration_is_gone(self, api: ManagementApi, device: tuple[RawDevice, str]) -> None:
        raw, device_id = device
        api.wait_for_configuration(device_id)
        api.set_configuration(device_id, EDITED)
        assert raw.report_configuration(EDITED).status_code == 204
        api.decommission(device_id)
        wait_until(
            lambda: api.device_configuration(device_id) is None,
            timeout=30.0,
            what=f"configuration of decommissioned {device_id} deleted",
            details=lambda: f"still there: {api.device_configuration(device_id)}",
        )
        assert raw.get_configuration().status_code == 401
