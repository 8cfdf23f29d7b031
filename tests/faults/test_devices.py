"""Devices at work while a process of `make run` is killed with SIGKILL.

- An auth burst: preauthorized devices send signed auth requests at once (then report
  inventory and poll), and deviceauth, or the database, is killed mid-burst. Every device
  ends up with a token, deviceauth holds each device once with one accepted auth set, and
  each device reaches inventory.
- A decommission while a peer (inventory, deviceconnect, deviceconfig) is dead: deviceauth
  forgets the device at once, and the peer once it is back; the effect is delivered, not
  left queued or set aside, and a device beside it keeps everything.

One stack serves the module; the launcher restarts what each test kills.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, closing
from functools import partial
from typing import Any, Final

import httpx
import pytest
from pymongo import MongoClient

from common.core.mongo import Document
from common.localstack.launcher import DATABASE
from tests.e2e.api import (
    DEVAUTH,
    DEVICECONFIG,
    INVENTORY_V1,
    ManagementApi,
    same_key,
    unique_identity,
)
from tests.faults.stack import RunningLauncher, ready_launcher
from tests.toolkit import Retrying, SimulatedDevice, assert_error, eventually, wait_until
from tests.toolkit.devices import NEXT_V2

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

DEVICES: Final = 24
# Devices authenticated before the kill: the rest of the burst is in flight or queued.
KILL_AFTER: Final = DEVICES // 4
# Requests the devices have in flight at once.
CONNECTIONS: Final = 8
# A restarted service imports its whole framework again: slow on a busy two-core machine.
BACK: Final = 90.0
DEVICECONNECT: Final = "/api/management/v1/deviceconnect/devices"
# Where each service shows a device: 200 while it knows it, 404 once it is gone.
DEVICE_URLS: Final = {
    "deviceauth": f"{DEVAUTH}/devices/{{}}",
    "inventory": f"{INVENTORY_V1}/devices/{{}}",
    "deviceconnect": f"{DEVICECONNECT}/{{}}",
    "deviceconfig": f"{DEVICECONFIG}/{{}}",
}


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLauncher]:
    """One stack for the module."""
    with ready_launcher(tmp_path_factory.mktemp("launcher")) as running:
        yield running


@pytest.fixture
def api(launcher: RunningLauncher) -> Iterator[ManagementApi]:
    """The management API as the admin (waiting out a restart an earlier test caused)."""
    wait_until(
        lambda: launcher.login().status_code == 200,
        timeout=BACK,
        what="a login through the gateway",
    )
    with closing(launcher.management_api()) as client:
        yield client


@asynccontextmanager
async def _devices(
    launcher: RunningLauncher, api: ManagementApi, count: int, prefix: str
) -> AsyncIterator[tuple[list[SimulatedDevice], Retrying]]:
    """`count` preauthorized devices (not yet authenticated) and the retries they share."""
    retrying = Retrying()
    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=launcher.url, limits=limits, timeout=30) as http:
        devices = [
            SimulatedDevice(http, unique_identity(prefix), retrying=retrying) for _ in range(count)
        ]
        for device in devices:
            api.preauthorize(device.identity, device.pubkey)
        yield devices, retrying


async def _work(device: SimulatedDevice) -> None:
    """What a device does after it starts: authenticate, report its inventory, poll."""
    await device.authenticate()
    await device.report_inventory(
        {"device_type": device.device_type, "artifact_name": device.artifact_name}
    )
    assert await device.poll() is None


def _ours(api: ManagementApi, devices: Sequence[SimulatedDevice]) -> list[dict[str, Any]]:
    """deviceauth's devices with the identity of one of `devices`."""
    serials = {d.identity["serial"] for d in devices}
    return [
        d
        for d in api.devauth_devices()
        if isinstance(d["identity_data"], dict) and d["identity_data"].get("serial") in serials
    ]


class TestAuthBurst:
    @pytest.mark.parametrize("killed", ["deviceauth", DATABASE])
    async def test_every_device_authenticated_once(
        self, launcher: RunningLauncher, api: ManagementApi, killed: str
    ) -> None:
        async with _devices(launcher, api, DEVICES, f"burst-{killed}") as (devices, retrying):
            burst = asyncio.gather(*(_work(d) for d in devices))
            await eventually(
                lambda: sum(d.token is not None for d in devices) >= KILL_AFTER,
                within=60,
                what=f"{KILL_AFTER} devices authenticated",
            )
            authenticated = sum(d.token is not None for d in devices)
            pid = launcher.kill(killed)
            await burst

        assert authenticated < DEVICES, "the burst was over before the kill"
        if killed == "deviceauth":
            # Its requests in flight died with it, and were answered once it was back. (While
            # the database restarts, services may also just wait for it to answer again.)
            assert retrying.failed > 0
        assert f"{killed} was killed by SIGKILL" in launcher.launcher_log()
        assert launcher.children()[killed] != pid
        by_id = {d.id: d for d in devices}
        assert len(by_id) == DEVICES
        known = _ours(api, devices)
        assert sorted(d["id"] for d in known) == sorted(by_id)
        for found in known:
            device = by_id[str(found["id"])]
            assert found["identity_data"] == device.identity
            assert found["status"] == "accepted"
            auth_sets = found["auth_sets"]
            assert isinstance(auth_sets, list)
            assert [a["status"] for a in auth_sets] == ["accepted"], found
            assert same_key(auth_sets[0]["pubkey"], device.pubkey)
        for device in devices:
            attributes = api.wait_for_attributes(
                device.id,
                {
                    ("identity", "serial"): device.identity["serial"],
                    ("identity", "status"): "accepted",
                    ("inventory", "device_type"): device.device_type,
                },
                timeout=BACK,
            )
            assert attributes[("identity", "mac")] == device.identity["mac"]


def _answers(api: ManagementApi, url: str, status: int) -> bool:
    """Whether a management URL answers `status` now."""
    return api.http.get(url).status_code == status


def _outbox_of(launcher: RunningLauncher, device_id: str) -> list[Document]:
    """deviceauth's queued (or set aside) effects that concern a device."""
    env = launcher.environment_of("deviceauth")
    client: MongoClient[Document] = MongoClient(env["DEVICEAUTH_MONGO_URL"])
    with client:
        outbox = client[env["DEVICEAUTH_MONGO_DB"]]["outbox"]
        return list(outbox.find({"path": {"$regex": device_id}}))


class TestDecommission:
    @pytest.mark.parametrize("peer", ["inventory", "deviceconnect", "deviceconfig"])
    async def test_delivered_once_the_peer_is_back(
        self, launcher: RunningLauncher, api: ManagementApi, peer: str
    ) -> None:
        async with _devices(launcher, api, 2, f"decommission-{peer}") as (devices, _):
            await asyncio.gather(*(_work(d) for d in devices))
            gone, kept = devices
            for device in devices:
                for name, url in DEVICE_URLS.items():
                    wait_until(
                        partial(_answers, api, url.format(device.id), 200),
                        timeout=BACK,
                        what=f"the device known to {name}",
                    )

            log_path = launcher.state_dir / "logs" / "deviceauth.log"
            before_kill = len(log_path.read_text())
            pid = launcher.kill(peer)
            api.decommission(gone.id)
            assert_error(
                api.http.get(DEVICE_URLS["deviceauth"].format(gone.id)), 404, "device not found"
            )
            launcher.restarted(peer, pid)

            for name, url in DEVICE_URLS.items():
                wait_until(
                    partial(_answers, api, url.format(gone.id), 404),
                    timeout=BACK,
                    what=f"the device gone from {name}",
                )
                assert _answers(api, url.format(kept.id), 200), f"{name} lost the other device"
            # Every peer's effect delivered, none refused (a refused one would stay, set
            # aside); the other peers' queues may still be in a backoff of an earlier test.
            wait_until(
                lambda: _outbox_of(launcher, gone.id) == [],
                timeout=BACK,
                what="deviceauth's outbox empty of the device's effects",
                details=lambda: str(_outbox_of(launcher, gone.id)),
            )
            # The killed peer's deliveries were tried while it was dead, and retried. (The
            # relay logs a failed round by its first effect, which may be another device's.)
            log = log_path.read_text()[before_kill:]
            assert any(f"effects for {peer} failed" in line for line in log.splitlines()), log[
                -3000:
            ]
            # Its token is refused from now on (once the gateway's token cache lets go of it),
            # and it is decommissioned once: there is nothing left to decommission again.
            refused = await eventually(
                lambda: _refused(gone), within=30, interval=0.5, what="the token refused"
            )
            assert_error(refused, 401)
            again = api.http.delete(DEVICE_URLS["deviceauth"].format(gone.id))
            assert_error(again, 404, "device not found")


async def _refused(device: SimulatedDevice) -> httpx.Response | None:
    """The device's next poll, if the gateway refuses its token."""
    body = {"device_provides": {"artifact_name": device.artifact_name, "device_type": "x"}}
    response = await device.http.post(
        NEXT_V2, json=body, headers={"Authorization": f"Bearer {device.token}"}
    )
    return response if response.status_code == 401 else None
