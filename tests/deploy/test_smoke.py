"""The deployment files start a working server: every process with exactly the environment
docker-compose.yml or the Helm chart gives it (mapped onto this machine by
`tests.deploy.environments`), then health, a login through the gateway, and a device that
authenticates once accepted."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from common.localstack.embedded import EmbeddedMongo, free_port
from common.localstack.processes import spawn, stop_all
from common.localstack.registry import discover
from tests.deploy.chart import render
from tests.deploy.environments import DATABASE, GATEWAY, NATS, Deployment, from_chart, from_compose
from tests.deviceauth.conftest import FakeDevice, generate_device_key
from tests.toolkit import eventually, wait_until

COMPOSE: Final = Path(__file__).parents[2] / "deploy" / "docker-compose.yml"
SERVICES: Final = discover()
ADMIN: Final = {"email": "admin@example.com", "password": "smoke-test-password"}
# The operator's own Secret that the chart's admin Job reads.
ADMIN_SECRET: Final = "fleetport-admin"
# What the operator sets for `docker compose up`; the certificate names this machine.
COMPOSE_VARIABLES: Final = {
    "FLEETPORT_ADMIN_EMAIL": ADMIN["email"],
    "FLEETPORT_ADMIN_PASSWORD": ADMIN["password"],
    "FLEETPORT_HOSTNAME": "127.0.0.1",
}


class _Running:
    """A deployment's processes on this machine, around one embedded database and NATS."""

    def __init__(self, deployment: Deployment, logs: Path) -> None:
        self.deployment = deployment
        self.logs = logs
        # Every component a URL may name; what is not started here (the web UI) answers nothing.
        components = {*deployment.processes, *deployment.hosts.values(), DATABASE, NATS}
        self.ports = {name: free_port() for name in components}
        self.db = EmbeddedMongo(logs / "db", port=self.ports[DATABASE], log=logs / "db.log")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # Only what the files give, plus where the interpreter is: nothing leaks from here.
        self.base_env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        self.envs = {
            name: deployment.localise(
                process, self._prefix(name), self.ports, port=self.ports[name]
            )
            for name, process in deployment.processes.items()
        }
        # The gateway serves HTTPS when the files give it a certificate: trust that one only.
        cert = self.envs[GATEWAY].get("GATEWAY_TLS_CERT_FILE")
        scheme = "https" if cert else "http"
        self.gateway_url = f"{scheme}://127.0.0.1:{self.ports[GATEWAY]}"
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=cert) if cert else True
        )

    def health_url(self, component: str) -> str:
        """Where a component answers its health check."""
        if component == GATEWAY:
            return f"{self.gateway_url}/status"
        svc = next(s for s in SERVICES if s.name == component)
        return f"http://127.0.0.1:{self.ports[component]}{svc.health_path}"

    def _prefix(self, component: str) -> str:
        if component == GATEWAY:
            return "GATEWAY_"
        return next(s.env_prefix for s in SERVICES if s.name == component)

    def start(self) -> None:
        self.db.start()
        nats = shutil.which("nats-server")
        assert nats, "nats-server is not installed (make e2e-deps installs it)"
        self.procs[NATS] = spawn(
            [nats, "-a", "127.0.0.1", "-p", str(self.ports[NATS])], log=self.logs / "nats.log"
        )
        for name, process in self.deployment.processes.items():
            self.procs[name] = spawn(
                [sys.executable, "-m", process.module, *process.args],
                env=self.base_env | self.envs[name],
                log=self.logs / f"{name}.log",
            )

    def wait_healthy(self) -> None:
        with httpx.Client(timeout=2.0, verify=self.verify) as client:
            for name in self.deployment.processes:

                def healthy(name: str = name) -> bool:
                    exited = self.procs[name].poll()
                    assert exited is None, f"{name} exited {exited}: {self.logs / name}.log"
                    try:
                        return client.get(self.health_url(name)).status_code == 204
                    except httpx.TransportError:
                        return False

                wait_until(healthy, timeout=60.0, what=f"{name} healthy")

    def create_admin(self) -> subprocess.CompletedProcess[str]:
        process = self.deployment.create_admin
        env = self.base_env | self.deployment.localise(
            process, "USERADM_", self.ports, port=free_port()
        )
        argv = [sys.executable, "-m", process.module] if process.module else []
        argv += [*process.args]
        if process.module and "--username" not in argv:
            argv += ["--username", ADMIN["email"], "--password", ADMIN["password"]]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        stop_all(list(self.procs.values()))
        self.db.stop()


@pytest.fixture(scope="module", params=["compose", "chart"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Running]:
    local = tmp_path_factory.mktemp(f"{request.param}-volumes")
    if request.param == "compose":
        deployment = from_compose(COMPOSE, SERVICES, local, COMPOSE_VARIABLES)
    else:
        manifests = render({"admin": {"existingSecret": ADMIN_SECRET}})
        deployment = from_chart(manifests, SERVICES, local, {ADMIN_SECRET: ADMIN})
    stack = _Running(deployment, tmp_path_factory.mktemp(f"{request.param}-logs"))
    try:
        stack.start()
        stack.wait_healthy()
        created = stack.create_admin()
        assert created.returncode == 0, created.stderr
        yield stack
    finally:
        stack.stop()


class TestSmoke:
    def test_every_service_and_the_gateway_are_healthy(self, running: _Running) -> None:
        assert set(running.deployment.processes) == {s.name for s in SERVICES} | {GATEWAY}
        with httpx.Client(verify=running.verify) as client:
            for name in running.deployment.processes:
                assert client.get(running.health_url(name)).status_code == 204, name

    def test_the_root_leads_to_the_web_ui(self, running: _Running) -> None:
        with httpx.Client(verify=running.verify) as client:
            root = client.get(f"{running.gateway_url}/")
        assert root.status_code == 301
        assert root.headers["location"] == f"{running.gateway_url}/ui/"

    async def test_login_through_the_gateway_and_a_device_authenticates(
        self, running: _Running
    ) -> None:
        async with httpx.AsyncClient(
            base_url=running.gateway_url, timeout=10.0, verify=running.verify
        ) as client:
            login = await client.post(
                "/api/management/v1/useradm/auth/login", auth=(ADMIN["email"], ADMIN["password"])
            )
            assert login.status_code == 200, login.text
            user = {"Authorization": f"Bearer {login.text}"}
            me = await client.get("/api/management/v1/useradm/users/me", headers=user)
            assert me.json()["email"] == ADMIN["email"]

            device = FakeDevice(generate_device_key("rsa2048"))
            pending = await device.authenticate(client)
            assert pending.status_code == 401, pending.text
            listed = await client.get("/api/management/v2/devauth/devices", headers=user)
            [found] = listed.json()
            accept = await client.put(
                f"/api/management/v2/devauth/devices/{found['id']}/auth/"
                f"{found['auth_sets'][0]['id']}/status",
                json={"status": "accepted"},
                headers=user,
            )
            assert accept.status_code == 204, accept.text

            accepted = await device.authenticate(client)
            assert accepted.status_code == 200, accepted.text
            token = {"Authorization": f"Bearer {accepted.text}"}
            report = await client.patch(
                "/api/devices/v1/inventory/device/attributes",
                json=[{"name": "device_type", "value": "smoke"}],
                headers=token,
            )
            assert report.status_code == 200, report.text

            async def accepted_in_inventory() -> bool:
                got = await client.get(
                    f"/api/management/v1/inventory/devices/{found['id']}", headers=user
                )
                attributes = got.json().get("attributes", []) if got.status_code == 200 else []
                status = {"scope": "identity", "name": "status", "value": "accepted"}
                return any(status.items() <= a.items() for a in attributes)

            # deviceauth reached inventory at the address the deployment gives it.
            assert await eventually(accepted_in_inventory, what="accepted in inventory")
