"""The foundation through the gateway: the `make run` launcher, login, users, logout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from common.embedded import free_port
from common.launcher import DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD, Stack, admin_credentials

LOGIN = "/api/management/v1/useradm/auth/login"
LOGOUT = "/api/management/v1/useradm/auth/logout"
USERS = "/api/management/v1/useradm/users"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestLoginThroughGateway:
    def test_login_returns_raw_jwt(self, stack: Stack, admin: tuple[str, str]) -> None:
        r = httpx.post(stack.url + LOGIN, auth=admin)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/jwt"
        assert r.text.count(".") == 2
        assert r.headers["X-MEN-RequestID"]

    def test_bad_credentials(self, stack: Stack, admin: tuple[str, str]) -> None:
        r = httpx.post(stack.url + LOGIN, auth=(admin[0], "wrong-password"))
        assert r.status_code == 401
        assert set(r.json()) == {"error", "request_id"}

    def test_token_lists_users_then_logout_revokes_it(
        self, stack: Stack, admin: tuple[str, str]
    ) -> None:
        token = httpx.post(stack.url + LOGIN, auth=admin).text
        r = httpx.get(stack.url + USERS, headers=_bearer(token))
        assert r.status_code == 200
        assert admin[0] in [u["email"] for u in r.json()]
        assert httpx.post(stack.url + LOGOUT, headers=_bearer(token)).status_code == 202
        r = httpx.get(stack.url + USERS, headers=_bearer(token))
        assert r.status_code == 401
        assert set(r.json()) == {"error", "request_id"}

    def test_no_token(self, stack: Stack) -> None:
        r = httpx.get(stack.url + USERS)
        assert r.status_code == 401
        assert r.json()["request_id"] == r.headers["X-MEN-RequestID"]

    def test_internal_routes_are_hidden(self, stack: Stack) -> None:
        r = httpx.get(stack.url + "/api/internal/v1/useradm/health")
        assert r.status_code == 404
        assert r.json()["error"] == "not found"


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


class TestMakeRun:
    def test_starts_ready_and_stops_cleanly(self, tmp_path: Path) -> None:
        port = free_port()
        env = {
            **os.environ,
            "GATEWAY_PORT": str(port),
            "FLEETPORT_STATE_DIR": str(tmp_path / "state"),
            "FLEETPORT_ADMIN_EMAIL": "owner@example.com",
            "FLEETPORT_ADMIN_PASSWORD": "owner-password-1",
        }
        env.pop("MONGO_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "common.launcher"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            lines = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if line.startswith("Fleetport ready at "):
                    break
            assert lines, "the launcher printed nothing"
            assert lines[-1].startswith("Fleetport ready at "), "".join(lines)
            assert f"http://127.0.0.1:{port}" in lines[-1]
            r = httpx.post(
                f"http://127.0.0.1:{port}{LOGIN}", auth=("owner@example.com", "owner-password-1")
            )
            assert r.status_code == 200, r.text
            children = _children(proc.pid)
            assert len(children) >= 3  # database, services, gateway
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            deadline = time.monotonic() + 10
            while any(_alive(c) for c in children) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [c for c in children if _alive(c)]
            assert (tmp_path / "state" / "db").is_dir()
            assert (tmp_path / "state" / "keys" / "deviceauth.pem").is_file()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_production_mode_needs_a_password(self) -> None:
        assert admin_credentials({}, dev_mode=False) is None
        assert admin_credentials({}, dev_mode=True) == (DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD)
        given = {"FLEETPORT_ADMIN_EMAIL": "a@b.io", "FLEETPORT_ADMIN_PASSWORD": "long-enough"}
        assert admin_credentials(given, dev_mode=False) == ("a@b.io", "long-enough")
