"""Two gateways, one NATS: a change made through either is enforced by both within a second.

The whole stack runs as real processes with deviceauth and useradm publishing their
revocations on NATS (127.0.0.1:4222); a second gateway process stands beside the stack's
own. Each gateway checks tokens itself, from the issuers' keys and revocation feed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from common.localstack.embedded import free_port
from common.localstack.launcher import Stack
from common.localstack.processes import spawn, stop_all
from tests.e2e.api import DEVICE_NEXT_V1, USERS, ManagementApi, RawDevice, unique_identity
from tests.toolkit import wait_until

pytestmark = pytest.mark.timeout(300)

NATS: Final = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")
EMAIL: Final = "tokens@example.com"
PASSWORD: Final = "correct-horse-battery"
TOKENS: Final = "/api/management/v1/useradm/settings/tokens"
# How soon every gateway must enforce a change.
WITHIN: Final = 1.0

# What a device asks for (204: nothing to install), as a probe of its token.
POLL: Final = f"{DEVICE_NEXT_V1}?artifact_name=probe&device_type=probe"

# An accepted device holding a token, and its record in deviceauth.
Device = tuple[RawDevice, dict[str, Any]]


class SecondGateway:
    """A gateway process beside the stack's, on its own port, with the same upstreams."""

    def __init__(self, stack: Stack, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self._env = {
            **os.environ,
            "GATEWAY_LISTEN_PORT": self.url.rsplit(":", 1)[1],
            "GATEWAY_NATS_URI": NATS,
            **{f"GATEWAY_{name.upper()}_ADDR": addr for name, addr in stack.addrs.items()},
        }
        self._log = log
        self._proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        """Start the process and wait until it answers."""
        self._proc = spawn([sys.executable, "-m", "gateway"], env=self._env, log=self._log)
        wait_until(self._up, timeout=30, what="the second gateway up")
        return self._proc

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/status").status_code == 204
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """Stop the process."""
        stop_all([self._proc])


@pytest.fixture(scope="module")
def nats_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack, its own database, its issuers and gateway on NATS."""
    running = Stack(
        state_dir=tmp_path_factory.mktemp("fleetport-nats"),
        gateway_port=free_port(),
        extra_env={
            "DEVICEAUTH_NATS_URI": NATS,
            "USERADM_NATS_URI": NATS,
            "GATEWAY_NATS_URI": NATS,
        },
    )
    running.start()
    try:
        created = running.run_module(
            "useradm", "create-user", "--username", EMAIL, "--password", PASSWORD
        )
        assert created.returncode == 0, created.stderr
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def second(nats_stack: Stack) -> Iterator[SecondGateway]:
    """The second gateway."""
    gateway = SecondGateway(nats_stack, nats_stack.logs / "gateway-2.log")
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def admin_api(nats_stack: Stack) -> Iterator[ManagementApi]:
    """The management API through the stack's gateway."""
    token = _login(nats_stack.url)
    api = ManagementApi(nats_stack.url, token)
    try:
        yield api
    finally:
        api.close()


def _login(url: str) -> str:
    r = httpx.post(f"{url}/api/management/v1/useradm/auth/login", auth=(EMAIL, PASSWORD))
    assert r.status_code == 200, r.text
    return r.text


def _get(url: str, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})


def _refusals(urls: list[str], path: str, token: str) -> list[str]:
    """The message with which each gateway refuses the token, awaited for a second."""
    messages = []
    for url in urls:

        def refused(url: str = url) -> httpx.Response | None:
            r = _get(url, path, token)
            return r if r.status_code == 401 else None

        r = wait_until(refused, timeout=WITHIN, interval=0.05, what=f"refused by {url}")
        messages.append(r.json()["error"])
    return messages


@pytest.fixture
def device(nats_stack: Stack, admin_api: ManagementApi) -> Iterator[Device]:
    """An accepted device with a token that both gateways accept, and its record."""
    raw = RawDevice(nats_stack.url, unique_identity("revocation"))
    try:
        assert raw.auth_request().status_code == 401
        pending = admin_api.wait_for_device(raw.identity, status="pending")
        admin_api.accept(pending)
        assert raw.auth_request().status_code == 200
        yield raw, pending
    finally:
        raw.close()


class TestEnforcedByEveryGateway:
    def test_reject(
        self,
        nats_stack: Stack,
        second: SecondGateway,
        admin_api: ManagementApi,
        device: Device,
    ) -> None:
        raw, record = device
        assert raw.token is not None
        assert _get(second.url, POLL, raw.token).status_code == 204
        auth_id = record["auth_sets"][0]["id"]
        admin_api.set_auth_status(record["id"], auth_id, "rejected")
        # The gateway the change went through refuses it at once.
        r = _get(nats_stack.url, POLL, raw.token)
        assert r.status_code == 401
        assert _refusals([nats_stack.url, second.url], POLL, raw.token) == ["token invalid"] * 2

    def test_decommission_through_the_second(
        self, nats_stack: Stack, second: SecondGateway, device: Device
    ) -> None:
        raw, record = device
        assert raw.token is not None
        token = _login(nats_stack.url)
        r = httpx.delete(
            f"{second.url}/api/management/v2/devauth/devices/{record['id']}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 204, r.text
        assert _refusals([second.url, nats_stack.url], POLL, raw.token) == ["token invalid"] * 2

    def test_logout(self, nats_stack: Stack, second: SecondGateway) -> None:
        token = _login(nats_stack.url)
        assert _get(second.url, USERS, token).status_code == 200
        r = httpx.post(
            f"{nats_stack.url}/api/management/v1/useradm/auth/logout",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 202
        assert _refusals([nats_stack.url, second.url], USERS, token) == ["unauthorized"] * 2

    def test_personal_access_token_deleted(self, nats_stack: Stack, second: SecondGateway) -> None:
        session = _login(nats_stack.url)
        auth = {"Authorization": f"Bearer {session}"}
        created = httpx.post(f"{nats_stack.url}{TOKENS}", json={"name": "ci"}, headers=auth)
        assert created.status_code == 200, created.text
        pat = created.text
        assert _get(second.url, USERS, pat).status_code == 200
        [listed] = httpx.get(f"{second.url}{TOKENS}", headers=auth).json()
        r = httpx.delete(f"{second.url}{TOKENS}/{listed['id']}", headers=auth)
        assert r.status_code == 204
        assert _refusals([second.url, nats_stack.url], USERS, pat) == ["unauthorized"] * 2


class TestGatewayThatMissedChanges:
    def test_restarted_gateway_loads_what_it_missed(
        self,
        nats_stack: Stack,
        second: SecondGateway,
        admin_api: ManagementApi,
        device: Device,
    ) -> None:
        raw, record = device
        assert raw.token is not None
        second.stop()
        try:
            admin_api.decommission(record["id"])
        finally:
            second.start()
        r = _get(second.url, POLL, raw.token)
        assert r.status_code == 401
        assert r.json()["error"] == "token invalid"
