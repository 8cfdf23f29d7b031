"""`python -m services.useradm`: create-user (as the launcher uses it) and serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document
from common.localstack.embedded import free_port
from services.useradm.main import create_app
from tests.conftest import ClientFactory
from tests.toolkit import wait_until
from tests.useradm.conftest import claims_of, login, make_settings

_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(mongo_url: str, db_name: str, key_path: Path) -> dict[str, str]:
    """The environment the launcher gives useradm."""
    return {
        **os.environ,
        "USERADM_MONGO_URL": mongo_url,
        "USERADM_MONGO_DB": db_name,
        "USERADM_DEV_MODE": "true",
        "USERADM_BCRYPT_COST": "4",
        "USERADM_SERVER_PRIV_KEY_PATH": str(key_path),
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.useradm", *args],
        env=env,
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestCreateUser:
    async def test_prints_only_the_id_and_the_user_logs_in(
        self,
        env: dict[str, str],
        mongo_url: str,
        db_name: str,
        key_path: Path,
        asgi_client: ClientFactory,
        db: AsyncDatabase[Document],
    ) -> None:
        result = _run(
            env, "create-user", "--username", "Owner@Example.com", "--password", "s3cret-pass"
        )

        assert result.returncode == 0, result.stderr
        user_id = result.stdout.strip()
        assert result.stdout == f"{user_id}\n"
        stored = await db["users"].find_one({"_id": user_id})
        assert stored is not None
        assert stored["email"] == "owner@example.com"
        assert stored["tenant_id"] == ""
        async with asgi_client(create_app(make_settings(mongo_url, db_name, key_path))) as client:
            token = await login(client, "owner@example.com", "s3cret-pass")
        assert claims_of(token)["sub"] == user_id

    async def test_chosen_id_then_duplicates(
        self, env: dict[str, str], db: AsyncDatabase[Document]
    ) -> None:
        first = _run(
            env,
            "create-user",
            "--username",
            "a@example.com",
            "--password",
            "s3cret-pass",
            "--user-id",
            "admin-1",
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout == "admin-1\n"

        again = _run(env, "create-user", "--username", "A@example.com", "--password", "other-pass")
        assert again.returncode == 3
        assert again.stdout == ""
        assert again.stderr == "useradm: user with a given email already exists\n"

        same_id = _run(
            env,
            "create-user",
            "--username",
            "b@example.com",
            "--password",
            "s3cret-pass",
            "--user-id",
            "admin-1",
        )
        assert same_id.returncode == 3
        assert same_id.stderr == "useradm: user with a given id already exists\n"
        assert await db["users"].count_documents({}) == 1

    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            (["--username", "a@example.com", "--password", "short"], "minimum 8"),
            (["--username", "not-an-email", "--password", "s3cret-pass"], "email"),
            (["--username", "a@example.com", "--password", "s3cret-pass", "--user-id", "me"], "id"),
            (["--username", "a@example.com"], "--password"),
        ],
    )
    def test_invalid_input(self, env: dict[str, str], args: list[str], fragment: str) -> None:
        result = _run(env, "create-user", *args)
        assert result.returncode == 2
        assert result.stdout == ""
        assert fragment in result.stderr

    async def test_production_needs_no_signing_key_to_create_one(
        self, env: dict[str, str], db: AsyncDatabase[Document]
    ) -> None:
        # The one-shot that creates the first user holds the database URL, not the key.
        env = {**env, "USERADM_DEV_MODE": "false"}
        del env["USERADM_SERVER_PRIV_KEY_PATH"]
        result = _run(
            env, "create-user", "--username", "a@example.com", "--password", "s3cret-pass"
        )
        assert result.returncode == 0, result.stderr
        stored = await db["users"].find_one({"_id": result.stdout.strip()})
        assert stored is not None
        assert stored["email"] == "a@example.com"

    def test_production_needs_a_key_to_serve(self, env: dict[str, str]) -> None:
        env = {**env, "USERADM_DEV_MODE": "false"}
        del env["USERADM_SERVER_PRIV_KEY_PATH"]
        result = _run(env, "serve")
        assert result.returncode == 2
        assert "server_priv_key_path is required unless dev_mode is enabled" in result.stderr


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    """useradm served by `python -m services.useradm` on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.useradm"],
        env={**env, "USERADM_LISTEN_PORT": str(port)},
        cwd=_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class TestServe:
    def test_serves_health(self, server: str) -> None:
        def health() -> httpx.Response | None:
            try:
                return httpx.get(f"{server}/api/internal/v1/useradm/health")
            except httpx.TransportError:
                return None

        r = wait_until(health, timeout=30, interval=0.1, what="the server answering")
        assert r.status_code == 204
        assert r.content == b""
