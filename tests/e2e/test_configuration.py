"""Device configuration with the real client: set, deployed, applied by a `mender-configure`
update module, reported back."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.api import ManagementApi
from tests.e2e.conftest import DeviceFactory
from tests.e2e.tools import MenderDevice

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MODULE: Final = Path(__file__).with_name("mender_configure_module.py")
DESIRED: Final = {"timezone": "Europe/Oslo", "ntp_server": "pool.ntp.org", "motd": "hello $USER"}


def _module() -> str:
    """The module, run by this interpreter (the client runs it by its shebang)."""
    source = MODULE.read_text()
    return f"#!{sys.executable}\n" + source.split("\n", 1)[1]


def _config_file(device: MenderDevice) -> Path:
    """Where the module writes the configuration: /etc/mender is the sandbox's `etc`."""
    return device.root / "etc" / "mender-configure" / "device-config.json"


def _configurable(devices: DeviceFactory, prefix: str) -> tuple[MenderDevice, str]:
    device = devices.new(
        prefix,
        device_type=f"e2e-type-{uuid.uuid4().hex[:8]}",
        modules={"mender-configure": _module()},
    )
    devices.start(device)
    return device, devices.admit(device)


class TestConfigurationDeployment:
    def test_applied_and_reported(self, devices: DeviceFactory, api: ManagementApi) -> None:
        device, device_id = _configurable(devices, "configure")
        api.wait_for_configuration(device_id, configured={}, reported={})
        api.set_configuration(device_id, DESIRED)

        deployment_id = api.deploy_configuration(device_id)
        device.check_update()
        stats = api.wait_for_statistics(deployment_id, {"success": 1})
        assert stats["failure"] == 0
        finished = api.wait_finished(deployment_id)
        assert finished["type"] == "configuration"
        [record] = api.deployment_devices(deployment_id)
        assert (record["id"], record["status"]) == (device_id, "success")

        assert json.loads(_config_file(device).read_text()) == DESIRED
        shown = api.wait_for_configuration(device_id, reported=DESIRED)
        assert shown["configured"] == shown["reported"] == DESIRED
        assert shown["deployment_id"] == deployment_id
        name = f"configuration-{deployment_id}"
        assert device.show_artifact() == name
        assert device.show_provides()["data-partition.mender-configure.version"] == name

    def test_failed_attempt_is_retried(self, devices: DeviceFactory, api: ManagementApi) -> None:
        device, device_id = _configurable(devices, "retry")
        marker = _config_file(device).with_name("fail-once")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        api.wait_for_configuration(device_id)
        api.set_configuration(device_id, DESIRED)

        deployment_id = api.deploy_configuration(device_id, retries=1)
        device.check_update()
        # The first attempt fails; the client finds the retry at its next poll (2 s).
        stats = api.wait_for_statistics(deployment_id, {"success": 1})
        assert (stats["failure"], stats["pending"]) == (0, 0)
        assert not marker.exists()
        assert "failing this attempt as fail-once asks" in api.device_log(deployment_id, device_id)
        assert json.loads(_config_file(device).read_text()) == DESIRED
        shown = api.wait_for_configuration(device_id, reported=DESIRED)
        assert shown["configured"] == DESIRED
        assert api.wait_finished(deployment_id)["retries"] == 1
