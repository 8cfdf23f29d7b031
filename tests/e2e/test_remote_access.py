"""Remote access with the real tools: mender-connect on the device, mender-cli for the user.

The device runs `mender daemon` and `mender-connect` in its sandbox (mender-connect reaches
the server through the daemon's local proxy, over a private D-Bus). `mender-cli terminal`
needs a terminal: it runs inside a private tmux server, driven with send-keys and read with
capture-pane.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pymongo import MongoClient
from pymongo.collection import Collection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from common.localstack.embedded import free_port
from common.localstack.launcher import Stack
from tests.e2e.api import ManagementApi
from tests.e2e.conftest import DeviceFactory
from tests.e2e.tools import MenderCli, MenderDevice
from tests.toolkit import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DEVICECONNECT = "/api/management/v1/deviceconnect"
NO_UPDATE = r"No update available"


def connection_status(api: ManagementApi, device_id: str) -> str:
    """The device's status as deviceconnect reports it through the gateway."""
    response = api.http.get(f"{DEVICECONNECT}/devices/{device_id}")
    if response.status_code == 404:
        return "unknown"
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


@pytest.fixture
def connected(devices: DeviceFactory, api: ManagementApi) -> Iterator[tuple[MenderDevice, str]]:
    """An accepted device whose mender-connect holds its websocket."""
    # A long poll interval: the daemon then polls only when told to (check-update).
    device = devices.new("rc", extra_config={"UpdatePollIntervalSeconds": 600})
    devices.start(device)
    device_id = devices.admit(device)
    device.start_connect()
    wait_until(
        lambda: connection_status(api, device_id) == "connected",
        timeout=60,
        what="mender-connect connected",
        details=device.connect_log_text,
    )
    yield device, device_id
    device.stop_connect()


class _Tmux:
    """A private tmux server running one command in a 160x40 terminal."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self._socket = f"fleetport-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            [
                "tmux",
                "-L",
                self._socket,
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "40",
                shlex.join(argv),
            ],
            env=env,
            cwd=cwd,
            check=True,
            timeout=10,
        )

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self._socket, "send-keys", *keys], check=True, timeout=10)

    def screen(self) -> str:
        result = subprocess.run(
            ["tmux", "-L", self._socket, "capture-pane", "-p", "-S", "-200"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return result.stdout

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self._socket, "kill-server"], check=False, timeout=10)


def _playback(stack: Stack, token: str, session_id: str) -> list[dict[str, Any]]:
    async def play() -> list[dict[str, Any]]:
        url = "ws" + stack.url.removeprefix("http")
        url += f"{DEVICECONNECT}/sessions/{session_id}/playback?sleep_ms=0"
        frames = []
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            try:
                while True:
                    frames.append(msgpack.unpackb(await ws.recv(), raw=False))
            except ConnectionClosed:
                pass
        return frames

    return asyncio.run(play())


class TestConnection:
    def test_connected_then_disconnected(
        self, connected: tuple[MenderDevice, str], api: ManagementApi
    ) -> None:
        device, device_id = connected
        assert connection_status(api, device_id) == "connected"
        device.stop_connect()
        wait_until(
            lambda: connection_status(api, device_id) == "disconnected",
            timeout=30,
            what="disconnected after mender-connect stopped",
        )

    def test_rejected_device_is_cut_off(
        self, connected: tuple[MenderDevice, str], api: ManagementApi
    ) -> None:
        _, device_id = connected
        found = api.devauth_device(device_id)
        assert found is not None
        api.set_auth_status(device_id, found["auth_sets"][0]["id"], "rejected")
        wait_until(
            lambda: connection_status(api, device_id) == "disconnected",
            timeout=15,
            what="disconnected once rejected",
        )
        # Its reconnection attempts are refused: it stays disconnected.
        time.sleep(6)
        assert connection_status(api, device_id) == "disconnected"


class TestTerminal:
    def test_runs_a_command_and_the_session_plays_back(
        self,
        connected: tuple[MenderDevice, str],
        cli: MenderCli,
        stack: Stack,
        admin_token: str,
        mongo_url: str,
    ) -> None:
        _, device_id = connected
        argv, env = cli.command("terminal", device_id)
        tmux = _Tmux(argv, env, cli.root)
        try:
            wait_until(lambda: "$" in tmux.screen() or "#" in tmux.screen(), what="a prompt")
            tmux.keys("echo fleetport-$((6*7))", "Enter")
            wait_until(
                lambda: "fleetport-42" in tmux.screen().replace("$((6*7))", ""),
                what="the command's output",
                details=tmux.screen,
            )
            tmux.keys("C-]")
            wait_until(lambda: "fleetport" not in tmux.screen(), what="mender-cli exited")
        finally:
            tmux.close()
        client: MongoClient[dict[str, Any]]
        with MongoClient(mongo_url) as client:
            sessions: Collection[dict[str, Any]] = client["deviceconnect"]["sessions"]
            session = wait_until(
                lambda: sessions.find_one({"device_id": device_id, "end_ts": {"$ne": None}}),
                what="the session ended",
            )
        assert session["kinds"] == ["terminal"]
        frames = _playback(stack, admin_token, session["_id"])
        output = b"".join(f["body"] for f in frames if f["hdr"]["typ"] == "shell")
        assert b"fleetport-42" in output
        assert len(output) == session["bytes_recorded"]
        assert {f["hdr"]["sid"] for f in frames} == {session["_id"]}


class TestFileTransfer:
    def test_10_mib_up_and_down(
        self, connected: tuple[MenderDevice, str], cli: MenderCli, tmp_path: Path
    ) -> None:
        device, device_id = connected
        original = tmp_path / "original.bin"
        original.write_bytes(os.urandom(10 * 1024 * 1024))
        on_device = device.root / "received.bin"
        cli.run("cp", str(original), f"{device_id}:{on_device}", timeout=120)
        assert (
            hashlib.sha256(on_device.read_bytes()).digest()
            == hashlib.sha256(original.read_bytes()).digest()
        )
        back = tmp_path / "back.bin"
        cli.run("cp", f"{device_id}:{on_device}", str(back), timeout=120)
        assert back.read_bytes() == original.read_bytes()

    def test_missing_file(self, connected: tuple[MenderDevice, str], cli: MenderCli) -> None:
        device, device_id = connected
        result = cli.run("cp", f"{device_id}:{device.root}/nope", "/tmp/x", check=False)
        assert result.returncode != 0
        assert "no such file or directory" in result.stdout + result.stderr


def _echo_server(port: int, stop: threading.Event) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                data = conn.recv(1024)
                conn.sendall(b"echo:" + data)


class TestPortForward:
    def test_reaches_a_tcp_service_on_the_device(
        self, connected: tuple[MenderDevice, str], cli: MenderCli
    ) -> None:
        _, device_id = connected
        remote, local = free_port(), free_port()
        stop = threading.Event()
        server = threading.Thread(target=_echo_server, args=(remote, stop), daemon=True)
        server.start()
        argv, env = cli.command("port-forward", device_id, f"{local}:{remote}")
        forward = subprocess.Popen(
            argv, env=env, cwd=cli.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:

            def exchange() -> bytes | None:
                try:
                    with socket.create_connection(("127.0.0.1", local), timeout=5) as conn:
                        conn.sendall(b"hello device")
                        return conn.recv(1024) or None
                except OSError:
                    return None

            assert wait_until(exchange, what="forwarded answer") == b"echo:hello device"
        finally:
            forward.terminate()
            forward.wait(10)
            stop.set()
            server.join(5)


class TestCheckUpdate:
    def test_the_client_polls_at_once(
        self, connected: tuple[MenderDevice, str], api: ManagementApi
    ) -> None:
        device, device_id = connected
        since = len(device.log_text())
        started = time.monotonic()
        response = api.http.post(f"{DEVICECONNECT}/devices/{device_id}/check-update")
        assert response.status_code == 202, response.text
        # The daemon polls deployments at once (its next scheduled check is 600 s away).
        device.wait_for_log(NO_UPDATE, timeout=30, since=since)
        assert "deployments/next" in device.log_text()[since:]
        # Far sooner than the 600 s poll interval.
        assert time.monotonic() - started < 60

    def test_not_connected(self, api: ManagementApi) -> None:
        response = api.http.post(f"{DEVICECONNECT}/devices/{uuid.uuid4()}/check-update")
        assert response.status_code == 404
        assert response.json()["error"] == "device not connected"
