"""The foundation through the gateway: login, users, logout; the first admin of `make run`.

`make run` itself, started, killed and stopped, is tested in tests/faults.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from common.localstack.launcher import DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD, Stack, admin_credentials
from tests.faults.stack import environment

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


class TestMakeRun:
    def test_production_mode_needs_a_password(self) -> None:
        assert admin_credentials({}, dev_mode=False) is None
        assert admin_credentials({}, dev_mode=True) == (DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD)
        given = {"FLEETPORT_ADMIN_EMAIL": "a@b.io", "FLEETPORT_ADMIN_PASSWORD": "long-enough"}
        assert admin_credentials(given, dev_mode=False) == ("a@b.io", "long-enough")


class TestStackWiring:
    def test_each_service_gets_what_its_declaration_asks_for(self, stack: Stack) -> None:
        pids = stack.pids()
        for svc in stack.services:
            env = environment(pids[svc.name])
            prefix = svc.env_prefix
            assert env[f"{prefix}MONGO_DB"] == svc.database
            assert stack.addrs[svc.name].endswith(":" + env[f"{prefix}LISTEN_PORT"])
            for peer in svc.peers:
                # A peer that is not built here is absent, not pointed at nothing.
                assert env.get(f"{prefix}{peer.upper()}_ADDR") == stack.addrs.get(peer), peer
            for name in svc.local_env:
                assert env[f"{prefix}{name}"], name
            others = {
                f"{other.env_prefix}{name}"
                for other in stack.services
                if other is not svc
                for name in other.local_env
            }
            assert not others & set(env), f"{svc.name} got another service's keys"

    def test_keys_are_generated_into_the_state_directory(self, stack: Stack) -> None:
        pids = stack.pids()
        useradm = Path(environment(pids["useradm"])["USERADM_SERVER_PRIV_KEY_PATH"])
        deviceauth = Path(environment(pids["deviceauth"])["DEVICEAUTH_SERVER_PRIV_KEY_PATH"])
        for key in (useradm, deviceauth):
            assert key.is_relative_to(stack.state_dir / "keys")
            assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
        assert useradm != deviceauth

    def test_the_gateway_knows_every_service(self, stack: Stack) -> None:
        env = environment(stack.pids()["gateway"])
        for svc in stack.services:
            assert env[f"GATEWAY_{svc.name.upper()}_ADDR"] == stack.addrs[svc.name]
