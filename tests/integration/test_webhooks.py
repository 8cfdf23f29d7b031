"""Webhooks through the whole stack: a device's lifecycle reaches a receiver, signed, even
when the receiver is down for a while."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import pytest

from common.localstack.embedded import free_port
from common.localstack.launcher import Stack
from tests.e2e.api import ManagementApi, RawDevice, unique_identity
from tests.iot_manager.conftest import Delivery, mender_signature
from tests.toolkit import wait_until

pytestmark = pytest.mark.timeout(180)

INTEGRATIONS: Final = "/api/management/v1/iot-manager/integrations"
EVENTS: Final = "/api/management/v1/iot-manager/events"
SECRET: Final = "5ec12e7a11ce"


@dataclass
class _Receiver:
    """A webhook receiver on 127.0.0.1 that can be stopped and started on the same port."""

    port: int = field(default_factory=free_port)
    received: list[Delivery] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fleetport-hooks"

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(Delivery(body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events_of(self, device_id: str) -> list[Delivery]:
        return [r for r in list(self.received) if r.event["data"]["id"] == device_id]


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def integration(api: ManagementApi, receiver: _Receiver) -> Iterator[str]:
    """A webhook integration posting to the receiver; removed afterwards."""
    body = {
        "provider": "webhook",
        "credentials": {"type": "http", "http": {"url": receiver.url, "secret": SECRET}},
        "description": "integration test",
    }
    r = api.http.post(INTEGRATIONS, json=body)
    assert r.status_code == 201, r.text
    integration_id = r.headers["Location"].rsplit("/", 1)[1]
    try:
        yield integration_id
    finally:
        assert api.http.delete(f"{INTEGRATIONS}/{integration_id}").status_code == 204


def _signed(received: Delivery) -> bool:
    algorithm = received.headers.get("x-men-algorithm")
    signature = received.headers.get("x-men-signature")
    return algorithm == "MEN-HMAC-SHA256-Payload" and signature == mender_signature(
        SECRET, received.body
    )


class TestWebhooks:
    def test_the_web_ui_lists_no_integrations(self, api: ManagementApi) -> None:
        # The web UI asks for this right after login, in open-source mode too.
        r = api.http.get(INTEGRATIONS)
        assert r.status_code == 200
        assert r.json() == []

    def test_device_lifecycle_reaches_the_receiver(
        self, stack: Stack, api: ManagementApi, receiver: _Receiver, integration: str
    ) -> None:
        [listed] = [i for i in api.http.get(INTEGRATIONS).json() if i["id"] == integration]
        assert listed["credentials"] == {
            "type": "http",
            "http": {"url": receiver.url, "secret": "<omitted>"},
        }
        device = RawDevice(stack.url, unique_identity("webhook"))
        try:
            assert device.auth_request().status_code == 401
            pending = api.wait_for_device(device.identity, status="pending")
            device_id = pending["id"]
            api.accept(pending)
            assert device.auth_request().status_code == 200
        finally:
            device.close()

        wait_until(
            lambda: len(receiver.events_of(device_id)) == 3,
            timeout=30,
            what="pending, provisioned and accepted posted",
        )
        pending_event, provisioned, accepted = receiver.events_of(device_id)
        assert all(_signed(r) for r in (pending_event, provisioned, accepted))
        assert pending_event.event["type"] == "device-status-changed"
        assert pending_event.event["data"] == {"id": device_id, "status": "pending"}
        assert provisioned.event["type"] == "device-provisioned"
        [auth_set] = provisioned.event["data"]["auth_sets"]
        assert auth_set["identity_data"] == device.identity
        assert auth_set["status"] == "accepted"
        assert accepted.event["type"] == "device-status-changed"
        assert accepted.event["data"] == {"id": device_id, "status": "accepted"}

        # The receiver is down when the device is decommissioned...
        receiver.stop()
        assert api.decommission(device_id).status_code == 204

        def failed_delivery() -> dict[str, Any] | None:
            for event in api.http.get(EVENTS, params={"per_page": 50}).json():
                statuses = event.get("delivery_statuses", [])
                if event["data"]["id"] == device_id and event["type"] == "device-decommissioned":
                    return event if statuses and not statuses[0]["success"] else None
            return None

        failed = wait_until(failed_delivery, timeout=30, what="a failed delivery listed")
        [failure, *_] = failed["delivery_statuses"]
        assert failure["integration_id"] == integration
        assert failure["error"].startswith("ConnectError")

        # ...and still gets the event once it is back.
        receiver.start()
        wait_until(
            lambda: len(receiver.events_of(device_id)) == 4,
            timeout=30,
            what="the decommissioning posted after the receiver came back",
        )
        decommissioned = receiver.events_of(device_id)[3]
        assert _signed(decommissioned)
        assert decommissioned.event == {
            "id": failed["id"],
            "type": "device-decommissioned",
            "data": {"id": device_id},
            "time": failed["time"],
        }

        def delivered() -> dict[str, Any] | None:
            events: list[dict[str, Any]] = api.http.get(EVENTS, params={"per_page": 50}).json()
            for event in events:
                if event["id"] == failed["id"] and event["delivery_statuses"][0]["success"]:
                    return event
            return None

        logged = wait_until(delivered, timeout=15, what="the later success listed")
        latest, *attempts = logged["delivery_statuses"]
        assert latest == {"integration_id": integration, "success": True, "status_code": 204}
        assert attempts
        assert all(not a["success"] and a["integration_id"] == integration for a in attempts)
