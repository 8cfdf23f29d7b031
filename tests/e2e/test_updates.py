"""Artifacts and deployments with the real tools: mender-artifact, mender-cli, the client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.api import ManagementApi, attribute_map
from tests.e2e.conftest import DeviceFactory
from tests.e2e.tools import (
    MenderCli,
    MenderDevice,
    make_module_artifact,
    make_script_artifact,
    read_artifact,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NO_UPDATE: Final = r"No update available"
# The sandbox's own directory is bind-mounted over /etc/mender inside the client's mount
# namespace, so one artifact installs into each device's sandbox.
DEST_DIR: Final = "/etc/mender/e2e-files"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


Upload = Callable[[Path, str], dict[str, Any]]


@pytest.fixture
def upload(cli: MenderCli, api: ManagementApi) -> Upload:
    """Upload an artifact file with mender-cli; the server's record of it."""

    def run(path: Path, name: str) -> dict[str, Any]:
        output = cli.artifacts_upload(path, description=f"e2e {name}")
        assert "upload successful" in output.lower()
        return api.artifact_named(name)

    return run


def _payload(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    content = f"installed by {name}\n".encode()
    path = tmp_path / "payload" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, content


def _installed(device: MenderDevice, payload: Path) -> Path:
    """Where the single-file module of `device` puts `payload` (DEST_DIR in its sandbox)."""
    return device.root / "etc" / Path(DEST_DIR).relative_to("/etc/mender") / payload.name


def _file_artifact(tmp_path: Path, name: str, device_type: str) -> tuple[Path, Path, bytes]:
    """A single-file artifact installing into DEST_DIR; (artifact, payload, its bytes)."""
    payload, content = _payload(tmp_path, name)
    artifact = make_module_artifact(
        tmp_path / f"{name}.mender",
        name=name,
        device_type=device_type,
        files=[payload],
        dest_dir=DEST_DIR,
        permissions="640",
    )
    return artifact, payload, content


class TestArtifactUpload:
    def test_upload_and_list(
        self, tmp_path: Path, cli: MenderCli, api: ManagementApi, upload: Upload
    ) -> None:
        name = _unique("e2e-upload")
        device_type = _unique("e2e-type")
        payload, _ = _payload(tmp_path, name)
        artifact = make_module_artifact(
            tmp_path,
            name=name,
            device_type=device_type,
            files=[payload],
            dest_dir="/opt/e2e",
        )
        assert f"Name: {name}" in read_artifact(artifact)

        record = upload(artifact, name)
        assert record["device_types_compatible"] == [device_type]
        assert record["size"] == artifact.stat().st_size
        assert record["artifact_provides"]["artifact_name"] == name
        [update] = record["updates"]
        assert update["type_info"]["type"] == "single-file"
        assert {f["name"] for f in update["files"]} == {
            "dest_dir",
            "filename",
            "permissions",
            payload.name,
        }

        listing = cli.artifacts_list(detail=1)
        assert name in listing
        assert record["id"] in listing


class TestModuleDeployment:
    def test_file_installed_then_redeploy_is_already_installed(
        self, tmp_path: Path, devices: DeviceFactory, api: ManagementApi, upload: Upload
    ) -> None:
        device = devices.new("install", device_type=_unique("e2e-type"))
        devices.start(device)
        device_id = devices.admit(device)
        name = _unique("e2e-file")
        artifact, payload, content = _file_artifact(tmp_path, name, device.device_type)
        upload(artifact, name)
        target = _installed(device, payload)

        deployment_id = api.create_deployment(_unique("install"), name, [device_id])
        device.check_update()
        stats = api.wait_for_statistics(deployment_id, {"success": 1})
        assert stats["failure"] == 0
        assert target.read_bytes() == content
        assert oct(target.stat().st_mode & 0o777) == oct(0o640)
        finished = api.wait_finished(deployment_id)
        assert finished["artifact_name"] == name
        [record] = api.deployment_devices(deployment_id)
        assert record["id"] == device_id
        assert record["status"] == "success"
        assert device.show_artifact() == name
        api.wait_for_attributes(device_id, {("inventory", "artifact_name"): name})

        again = api.create_deployment(_unique("again"), name, [device_id])
        device.check_update()
        stats = api.wait_for_statistics(again, {"already-installed": 1})
        assert stats["success"] == 0
        assert api.wait_finished(again)["status"] == "finished"
        assert device.show_artifact() == name


class TestGeneratedArtifact:
    def test_built_on_the_server_installs_on_the_client(
        self, devices: DeviceFactory, api: ManagementApi
    ) -> None:
        device = devices.new("generated", device_type=_unique("e2e-type"))
        devices.start(device)
        device_id = devices.admit(device)
        name = _unique("e2e-generated")
        content = f"generated on the server as {name}\n".encode()
        artifact_id = api.generate_artifact(
            name=name,
            device_type=device.device_type,
            filename="generated.conf",
            dest_dir=DEST_DIR,
            content=content,
        )
        assert api.wait_for_artifact(name)["id"] == artifact_id

        deployment_id = api.create_deployment(_unique("generated"), name, [device_id])
        device.check_update()
        stats = api.wait_for_statistics(deployment_id, {"success": 1})
        assert stats["failure"] == 0
        assert _installed(device, Path("generated.conf")).read_bytes() == content
        assert device.show_artifact() == name
        api.wait_for_attributes(device_id, {("inventory", "artifact_name"): name})


class TestFailingDeployment:
    def test_failure_is_reported_with_the_device_log(
        self, tmp_path: Path, devices: DeviceFactory, api: ManagementApi, upload: Upload
    ) -> None:
        device = devices.new("fail", device_type=_unique("e2e-type"))
        devices.start(device)
        device_id = devices.admit(device)
        name = _unique("e2e-broken")
        upload(make_script_artifact(tmp_path, name, device.device_type, 1), name)

        deployment_id = api.create_deployment(_unique("fail"), name, [device_id])
        device.check_update()
        stats = api.wait_for_statistics(deployment_id, {"failure": 1})
        assert stats["success"] == 0
        assert api.wait_finished(deployment_id)["status"] == "finished"
        [record] = api.deployment_devices(deployment_id)
        assert record["status"] == "failure"

        log = api.device_log(deployment_id, device_id)
        assert "exit status 1" in log
        assert "Running Mender client version" in log
        # The script module has no rollback: the client marks what it has as inconsistent.
        api.wait_for_attributes(device_id, {("inventory", "artifact_name"): f"{name}_INCONSISTENT"})


class TestGroupDeployment:
    def test_reaches_every_device_of_the_group(
        self, tmp_path: Path, devices: DeviceFactory, api: ManagementApi, upload: Upload
    ) -> None:
        device_type = _unique("e2e-type")
        group = _unique("e2e-group").replace("-", "_")
        members = [devices.new(f"member{i}", device_type=device_type) for i in range(2)]
        outsider = devices.new("outsider", device_type=device_type)
        devices.start(*members, outsider)
        member_ids = devices.admit_all(*members)
        outsider_id = devices.admit(outsider)
        for device_id in member_ids:
            api.set_group(device_id, group)
        for device_id in member_ids:
            api.wait_for_attributes(
                device_id, {("system", "group"): group, ("identity", "status"): "accepted"}
            )

        name = _unique("e2e-group-file")
        artifact, payload, content = _file_artifact(tmp_path, name, device_type)
        upload(artifact, name)

        deployment_id = api.create_group_deployment(group, _unique("group"), name)
        for member in members:
            member.check_update()
        api.wait_for_statistics(deployment_id, {"success": 2})
        finished = api.wait_finished(deployment_id)
        assert finished["max_devices"] == 2
        assert sorted(d["id"] for d in api.deployment_devices(deployment_id)) == sorted(member_ids)
        for member, device_id in zip(members, member_ids, strict=True):
            assert _installed(member, payload).read_bytes() == content
            assert member.show_artifact() == name
            api.wait_for_attributes(device_id, {("inventory", "artifact_name"): name})
        assert outsider.show_artifact() == "initial-release"
        assert not _installed(outsider, payload).exists()
        outsider_inventory = api.inventory_device(outsider_id)
        assert outsider_inventory is not None
        assert attribute_map(outsider_inventory)[("inventory", "artifact_name")] == (
            "initial-release"
        )


class TestAbort:
    def test_aborted_before_the_device_polls(
        self, tmp_path: Path, devices: DeviceFactory, api: ManagementApi, upload: Upload
    ) -> None:
        # Inventory and retries every 2 s, but update checks only when told to.
        device = devices.new(
            "abort",
            device_type=_unique("e2e-type"),
            extra_config={"UpdatePollIntervalSeconds": 3600},
        )
        devices.start(device)
        since = len(device.log_text())
        device_id = devices.admit(device)
        device.wait_for_log(NO_UPDATE, since=since)  # its first check, right after auth
        name = _unique("e2e-aborted")
        artifact, payload, _ = _file_artifact(tmp_path, name, device.device_type)
        upload(artifact, name)

        deployment_id = api.create_deployment(_unique("abort"), name, [device_id])
        api.abort(deployment_id)
        assert api.wait_finished(deployment_id)["status"] == "finished"

        since = len(device.log_text())
        device.check_update()
        device.wait_for_log(NO_UPDATE, since=since)
        after = device.log_text()[since:]
        assert "deployments/next): Response code: 204" in after
        assert "-> update-fetch" not in after
        assert not _installed(device, payload).exists()
        assert device.show_artifact() == "initial-release"
        stats = api.statistics(deployment_id)
        assert stats["success"] == stats["downloading"] == stats["installing"] == 0
        assert api.deployment(deployment_id)["status"] == "finished"
