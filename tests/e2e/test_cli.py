"""The real `mender-cli` against the stack: login and the device list."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from common.localstack.launcher import Stack
from tests.e2e.api import USERS
from tests.e2e.conftest import DeviceFactory
from tests.e2e.tools import MenderCli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class TestLogin:
    def test_writes_a_token_the_server_accepts(
        self, stack: Stack, admin: tuple[str, str], tmp_path: Path
    ) -> None:
        cli = MenderCli(tmp_path / "cli", stack.url)
        result = cli.run("login", "--username", admin[0], "--password", admin[1])
        assert "login successful" in result.stdout.lower()
        assert stat.S_IMODE(cli.token_path.stat().st_mode) == 0o600
        token = cli.token()
        assert token.count(".") == 2
        users = httpx.get(stack.url + USERS, headers={"Authorization": f"Bearer {token}"})
        assert users.status_code == 200, users.text
        assert admin[0] in [u["email"] for u in users.json()]

    def test_wrong_password_fails_without_a_token(
        self, stack: Stack, admin: tuple[str, str], tmp_path: Path
    ) -> None:
        cli = MenderCli(tmp_path / "cli", stack.url)
        result = cli.run(
            "login", "--username", admin[0], "--password", "not-the-password", check=False
        )
        assert result.returncode != 0
        assert "401" in result.stdout + result.stderr
        assert not cli.token_path.exists()


class TestDevicesList:
    def test_shows_an_accepted_device(self, cli: MenderCli, devices: DeviceFactory) -> None:
        device = devices.new("cli")
        devices.start(device)
        device_id = devices.admit(device)

        listing = cli.devices_list(detail=1)
        entry = next(e for e in listing.split("-" * 80) if device_id in e)
        assert "Status: accepted" in entry
        assert f"MAC address: {device.identity['mac']}" in entry

        raw = {d["id"]: d for d in cli.devices_json()}
        assert raw[device_id]["status"] == "accepted"
        assert raw[device_id]["identity_data"] == device.identity
        assert [a["status"] for a in raw[device_id]["auth_sets"]] == ["accepted"]
