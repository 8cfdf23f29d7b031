"""The audit trail of the whole stack: one of each audited action through the gateway, each
found exactly once with its actor and object (remote access included); also when auditlogs
is down meanwhile."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from common.core.claims import decode_claims
from common.localstack.launcher import Stack
from services.deviceconnect.app.protocol import SHELL, Frame, encode
from tests.conftest import ADMIN_EMAIL
from tests.deployments.helpers import ArtifactFactory
from tests.deviceconnect.conftest import DEVICE_WS
from tests.deviceconnect.fakes import FakeDevice, open_ws
from tests.deviceconnect.test_api_sessions import next_frame, start_shell
from tests.e2e.api import ManagementApi, RawDevice, unique_identity
from tests.toolkit import assert_error, wait_until

pytestmark = pytest.mark.timeout(240)

AUDITLOGS: Final = "auditlogs"
LOGS: Final = "/api/management/v1/auditlogs/logs"
USERS: Final = "/api/management/v1/useradm/users"
TOKENS: Final = "/api/management/v1/useradm/settings/tokens"
DEVAUTH: Final = "/api/management/v2/devauth/devices"
ARTIFACTS: Final = "/api/management/v1/deployments/artifacts"
RELEASES: Final = "/api/management/v2/deployments/deployments/releases"
DEPLOYMENTS: Final = "/api/management/v1/deployments/deployments"
CONFIG: Final = "/api/management/v1/deviceconfig/configurations/device"
INTEGRATIONS: Final = "/api/management/v1/iot-manager/integrations"


@dataclass(frozen=True)
class Expected:
    """One audit event an action must leave: what, on which object, by whom."""

    action: str
    object_type: str
    object_id: str
    actor_id: str

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether the event is this one."""
        seen = (event["action"], event["object"]["type"], event["object"]["id"])
        return seen == (self.action, self.object_type, self.object_id) and bool(
            event["actor"]["id"] == self.actor_id
        )


def _ok(response: httpx.Response, *statuses: int) -> httpx.Response:
    assert response.status_code in statuses, f"{response.request.url}: {response.text}"
    return response


def _last(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


class _Operator:
    """Performs one of each audited action through the gateway and says what it expects."""

    def __init__(self, stack: Stack, api: ManagementApi, artifacts: ArtifactFactory) -> None:
        self.stack = stack
        self.http = api.http
        self.admin = decode_claims(api.http.headers["Authorization"].split()[1])["sub"]
        self.artifacts = artifacts
        self.tag = uuid.uuid4().hex[:8]
        self.expected: list[Expected] = []

    def _expect(self, action: str, object_type: str, object_id: str, actor: str = "") -> None:
        self.expected.append(Expected(action, object_type, object_id, actor or self.admin))

    def users(self) -> None:
        """Create a user, who changes their password; rename and delete them; a token."""
        email, password = f"audit-{self.tag}@example.com", "first-password-1"
        r = _ok(self.http.post(USERS, json={"email": email, "password": password}), 201)
        user_id = _last(r.headers["Location"])
        self._expect("create", "user", user_id)
        login = self.stack.url + "/api/management/v1/useradm/auth/login"
        token = _ok(httpx.post(login, auth=(email, password)), 200).text
        _ok(
            httpx.put(
                self.stack.url + "/api/management/v2/useradm/users/me",
                json={"password": "second-password-2", "current_password": password},
                headers={"Authorization": f"Bearer {token}"},
            ),
            204,
        )
        self._expect("update", "user", user_id, actor=user_id)
        new_email = f"renamed-{self.tag}@example.com"
        _ok(self.http.put(f"{USERS}/{user_id}", json={"email": new_email}), 204)
        self._expect("update", "user", user_id)
        _ok(self.http.delete(f"{USERS}/{user_id}"), 204)
        self._expect("delete", "user", user_id)
        pat = _ok(self.http.post(TOKENS, json={"name": f"ci-{self.tag}", "expires_in": 60}), 200)
        pat_id = decode_claims(pat.text)["jti"]
        self._expect("create", "user_access_token", pat_id)
        _ok(self.http.delete(f"{TOKENS}/{pat_id}"), 204)
        self._expect("delete", "user_access_token", pat_id)

    def devices(self) -> None:
        """Preauthorize and decommission one device; accept, reject and dismiss another."""
        preauthorized = RawDevice(self.stack.url, unique_identity(f"pre-{self.tag}"))
        body = {"identity_data": preauthorized.identity, "pubkey": preauthorized.pubkey}
        r = _ok(self.http.post(DEVAUTH, json=body), 201)
        preauthorized.close()
        pre_id = _last(r.headers["Location"])
        self._expect("preauthorize", "device", pre_id)
        device = RawDevice(self.stack.url, unique_identity(f"dev-{self.tag}"))
        try:
            assert device.auth_request().status_code == 401
            pending = self._pending(device)
        finally:
            device.close()
        device_id, auth_id = pending["id"], pending["auth_sets"][0]["id"]
        status = f"{DEVAUTH}/{device_id}/auth/{auth_id}/status"
        for value, action in (("accepted", "accept"), ("rejected", "reject")):
            _ok(self.http.put(status, json={"status": value}), 204)
            self._expect(action, "device", device_id)
        _ok(self.http.delete(f"{DEVAUTH}/{device_id}/auth/{auth_id}"), 204)
        self._expect("dismiss", "device", device_id)
        _ok(self.http.delete(f"{DEVAUTH}/{pre_id}"), 204)
        self._expect("decommission", "device", pre_id)

    def software(self) -> None:
        """Upload (also directly), generate and delete artifacts; release notes and tags; a
        deployment created and aborted."""
        name = f"audit-{self.tag}"
        files = {"artifact": ("a.mender", self.artifacts.make(name))}
        r = _ok(self.http.post(ARTIFACTS, data={"description": ""}, files=files), 201)
        uploaded = _last(r.headers["Location"])
        self._expect("upload", "artifact", uploaded)
        link = _ok(self.http.post(f"{ARTIFACTS}/directupload"), 200).json()
        _ok(httpx.put(link["uri"], content=self.artifacts.make(f"{name}-direct")), 200)
        _ok(self.http.post(f"{ARTIFACTS}/directupload/{link['id']}/complete"), 202)
        self._expect("upload", "artifact", link["id"])
        form = {
            "name": f"{name}-generated",
            "device_types_compatible": "audit-board",
            "type": "single_file",
            "args": json.dumps({"filename": "a.conf", "dest_dir": "/etc"}),
        }
        r = _ok(
            self.http.post(
                f"{ARTIFACTS}/generate", data=form, files={"file": ("a.conf", b"key=value")}
            ),
            201,
        )
        generated = _last(r.headers["Location"])
        self._expect("generate", "artifact", generated)
        _ok(self.http.patch(f"{RELEASES}/{name}", json={"notes": "audited"}), 204)
        _ok(self.http.put(f"{RELEASES}/{name}/tags", json=["audited"]), 204)
        self._expect("update", "release", name)
        self._expect("update", "release", name)
        body = {"name": f"roll-{self.tag}", "artifact_name": name, "devices": ["audit-device"]}
        deployment = _last(_ok(self.http.post(DEPLOYMENTS, json=body), 201).headers["Location"])
        self._expect("create", "deployment", deployment)
        _ok(self.http.put(f"{DEPLOYMENTS}/{deployment}/status", json={"status": "aborted"}), 204)
        self._expect("abort", "deployment", deployment)
        wait_until(
            lambda: self.http.get(f"{ARTIFACTS}/{generated}").status_code == 200,
            timeout=60,
            what="the generated artifact",
        )
        _ok(self.http.delete(f"{ARTIFACTS}/{uploaded}"), 204)
        self._expect("delete", "artifact", uploaded)

    def configuration(self) -> None:
        """Set a device's configuration and deploy it."""
        device_id = str(uuid.uuid4())
        _ok(self.http.put(f"{CONFIG}/{device_id}", json={"mode": self.tag}), 204)
        self._expect("set_configuration", "device", device_id)
        _ok(self.http.post(f"{CONFIG}/{device_id}/deploy", json={"retries": 0}), 200)
        self._expect("deploy_configuration", "device", device_id)

    def integration(self) -> None:
        """Create a webhook integration, change its credentials, delete it."""

        def webhook(url: str) -> dict[str, Any]:
            return {"type": "http", "http": {"url": url}}

        body = {
            "provider": "webhook",
            "credentials": webhook("http://127.0.0.1:9/hook"),
            "description": self.tag,
        }
        integration = _last(_ok(self.http.post(INTEGRATIONS, json=body), 201).headers["Location"])
        self._expect("create", "integration", integration)
        other = webhook("http://127.0.0.1:9/other")
        _ok(self.http.put(f"{INTEGRATIONS}/{integration}/credentials", json=other), 204)
        self._expect("update", "integration", integration)
        _ok(self.http.delete(f"{INTEGRATIONS}/{integration}"), 204)
        self._expect("delete", "integration", integration)

    def remote_access(self) -> None:
        """Accept a device, which connects as mender-connect does; a terminal session."""
        device = RawDevice(self.stack.url, unique_identity(f"remote-{self.tag}"))
        try:
            assert device.auth_request().status_code == 401
            pending = self._pending(device)
            auth = f"{DEVAUTH}/{pending['id']}/auth/{pending['auth_sets'][0]['id']}/status"
            _ok(self.http.put(auth, json={"status": "accepted"}), 204)
            self._expect("accept", "device", pending["id"])
            assert device.auth_request().status_code == 200
            assert device.token is not None
            asyncio.run(self._terminal(pending["id"], device.token))
        finally:
            device.close()
        self._expect("open_terminal", "device", pending["id"])
        self._expect("close_terminal", "device", pending["id"])

    async def _terminal(self, device_id: str, device_token: str) -> None:
        """A shell opened and stopped on the device through the gateway's websockets."""
        ws_url = "ws" + self.stack.url.removeprefix("http")
        user_token = self.http.headers["Authorization"].split()[1]
        user_url = f"{ws_url}/api/management/v1/deviceconnect/devices/{device_id}/connect"
        async with open_ws(ws_url + DEVICE_WS, device_token) as device_ws:
            fake = FakeDevice(device_ws)
            fake.start()
            try:
                async with open_ws(user_url, user_token, close_timeout=1) as ws:
                    await start_shell(ws)
                    await ws.send(encode(Frame(SHELL, "stop")))
                    await next_frame(ws, "stop")
            finally:
                await fake.stop()

    def _pending(self, device: RawDevice) -> dict[str, Any]:
        def listed() -> dict[str, Any] | None:
            devices = self.http.get(DEVAUTH, params={"status": "pending"}).json()
            return next((d for d in devices if d["identity_data"] == device.identity), None)

        found: dict[str, Any] = wait_until(listed, timeout=30, what="the device pending")
        return found

    def everything(self) -> None:
        """Every audited action once."""
        self.users()
        self.devices()
        self.software()
        self.configuration()
        self.integration()
        self.remote_access()


@pytest.fixture
def operator(stack: Stack, api: ManagementApi, tmp_path: Path) -> _Operator:
    """Someone about to perform every audited action."""
    return _Operator(stack, api, ArtifactFactory(tmp_path))


def _trail(api: ManagementApi, since: int) -> list[dict[str, Any]]:
    response = api.http.get(LOGS, params={"created_after": since, "per_page": 500})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def _assert_recorded_once(api: ManagementApi, operator: _Operator, since: int) -> None:
    """Each expected event is in the trail exactly once, with the actor's email."""

    def complete() -> list[dict[str, Any]] | None:
        events = _trail(api, since)
        found = all(any(e.matches(event) for event in events) for e in operator.expected)
        return events if found else None

    events = wait_until(complete, timeout=60, what="every audit event")
    for expected in operator.expected:
        matching = [event for event in events if expected.matches(event)]
        # An action done twice (release notes, then tags) is expected twice.
        assert len(matching) == operator.expected.count(expected), expected
    admin_events = [e for e in events if e["actor"]["id"] == operator.admin]
    assert {e["actor"]["email"] for e in admin_events} == {ADMIN_EMAIL}


class TestAuditTrail:
    def test_every_audited_action_is_recorded_once(
        self, api: ManagementApi, operator: _Operator
    ) -> None:
        since = int(datetime.now(UTC).timestamp())
        operator.everything()
        _assert_recorded_once(api, operator, since)

    def test_events_wait_while_auditlogs_is_down(
        self, stack: Stack, api: ManagementApi, operator: _Operator
    ) -> None:
        since = int(datetime.now(UTC).timestamp())
        stack.stop_process(AUDITLOGS)
        try:
            operator.everything()
            # The trail is out of reach meanwhile; every change above was made all the same.
            assert_error(api.http.get(LOGS), 502, "auditlogs is unreachable")
        finally:
            stack.start_process(AUDITLOGS)
        _assert_recorded_once(api, operator, since)
