"""TLS at the gateway, proxies in front of it, and the web UI behind it: the scheme and host
the client used reach the services, and come back in links and redirects."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import connect

from common.core.certificates import ensure_self_signed
from gateway import Gateway, Settings, create_app, server_config
from services.deployments.config import Settings as DeploymentsSettings
from services.deployments.main import create_app as create_deployments
from tests.deployments.helpers import user_headers
from tests.gateway.conftest import Upstreams
from tests.gateway.stubs import DEVICE_VERIFY, StubService, VerifierControl, make_token, serve
from tests.gateway.stubs import serve_config as serve_gateway

PUBLIC = "/api/management/v1/useradm/auth/login"
DEVICE_WS = "/api/devices/v1/deviceconnect/connect"
DIRECT_UPLOAD = "/api/management/v1/deployments/artifacts/directupload"


@dataclass(frozen=True)
class _Tls:
    """The gateway's TLS settings, and a client context that trusts its certificate only."""

    settings: dict[str, Path]
    context: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> _Tls:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    ensure_self_signed(cert, key, ["localhost", "127.0.0.1"])
    context = ssl.create_default_context(cafile=str(cert))
    return _Tls({"tls_cert_file": cert, "tls_key_file": key}, context)


@pytest.fixture
async def ui(verifier: VerifierControl) -> AsyncIterator[tuple[StubService, str]]:
    """A stand-in for the web UI's server."""
    stub = StubService("ui", verifier)
    async with serve(stub) as url:
        yield stub, url


@asynccontextmanager
async def _gateway(
    upstreams: Upstreams, client_tls: ssl.SSLContext | None = None, /, **overrides: Any
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    values: dict[str, Any] = {f"{n}_addr": a for n, a in upstreams.addrs.items()}
    values.update(overrides)
    app: Gateway = create_app(Settings(**values))
    async with (
        serve_gateway(server_config(app, port=0)) as url,
        httpx.AsyncClient(base_url=url, verify=client_tls or True, timeout=10) as client,
    ):
        yield url, client


def _forwarded(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    forwarded: dict[str, str] = dict(response.json()["headers"])
    return forwarded


class TestTls:
    async def test_https_reaches_the_service_as_https(
        self,
        upstreams: Upstreams,
        verifier: VerifierControl,
        tls: _Tls,
    ) -> None:
        async with _gateway(upstreams, tls.context, **tls.settings) as (
            url,
            client,
        ):
            assert url.startswith("https://127.0.0.1:")
            r = await client.get(PUBLIC)
            assert r.http_version == "HTTP/1.1"
            forwarded = _forwarded(r)
            assert forwarded["x-forwarded-proto"] == "https"
            assert forwarded["x-forwarded-host"] == url.removeprefix("https://")
            assert forwarded["x-forwarded-for"] == "127.0.0.1"
            status = await client.get("/status")
            assert status.status_code == 204
            assert status.headers["x-men-requestid"]

    async def test_plain_http_on_the_tls_port_gets_no_answer(
        self, upstreams: Upstreams, verifier: VerifierControl, tls: _Tls
    ) -> None:
        path = f"/api/management/v1/useradm/plain-{uuid.uuid4()}"
        async with _gateway(upstreams, **tls.settings) as (url, _):
            async with httpx.AsyncClient() as plain:
                with pytest.raises(httpx.TransportError):
                    await plain.get(url.replace("https://", "http://") + path)
        assert path not in upstreams.stubs["useradm"].started

    async def test_a_websocket_over_tls(
        self,
        upstreams: Upstreams,
        verifier: VerifierControl,
        tls: _Tls,
    ) -> None:
        async with _gateway(upstreams, tls.context, **tls.settings) as (url, _):
            token = make_token()
            wss = "wss" + url.removeprefix("https") + DEVICE_WS
            async with connect(
                wss, ssl=tls.context, additional_headers={"Authorization": f"Bearer {token}"}
            ) as ws:
                await ws.send("over tls")
                assert await ws.recv() == "deviceconnect:over tls"
                frame = bytes(range(256)) * 256
                await ws.send(frame)
                assert await ws.recv() == frame[::-1]
        [entry] = upstreams.stubs["deviceconnect"].ws_log
        assert entry["headers"]["x-forwarded-proto"] == "https"
        assert entry["headers"]["authorization"] == f"Bearer {token}"
        assert [c["path"] for c in verifier.calls] == [DEVICE_VERIFY]
        assert verifier.calls[0]["x-forwarded-proto"] == "https"

    def test_certificate_and_key_go_together(self, tls: _Tls) -> None:
        cert = tls.settings["tls_cert_file"]
        with pytest.raises(ValidationError, match="set both or neither"):
            Settings(tls_cert_file=cert)
        with pytest.raises(ValidationError, match="is not a readable file"):
            Settings(tls_cert_file=cert, tls_key_file=cert.with_name("missing"))


class TestProxyHeaders:
    _CLAIMS = {  # noqa: RUF012 (read-only)
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "fleetport.example.com",
        "X-Forwarded-For": "203.0.113.9",
    }

    async def test_ignored_from_an_untrusted_address(
        self, upstreams: Upstreams, verifier: VerifierControl
    ) -> None:
        async with _gateway(upstreams, trusted_proxies="10.0.0.0/8, 192.168.1.1") as (url, client):
            forwarded = _forwarded(await client.get(PUBLIC, headers=self._CLAIMS))
        assert forwarded["x-forwarded-proto"] == "http"
        assert forwarded["x-forwarded-host"] == url.removeprefix("http://")
        assert forwarded["x-forwarded-for"] == "127.0.0.1"

    async def test_believed_from_a_trusted_proxy(
        self, upstreams: Upstreams, verifier: VerifierControl
    ) -> None:
        async with _gateway(upstreams, trusted_proxies="10.0.0.0/8 127.0.0.0/8") as (_, client):
            forwarded = _forwarded(await client.get(PUBLIC, headers=self._CLAIMS))
        assert forwarded["x-forwarded-proto"] == "https"
        assert forwarded["x-forwarded-host"] == "fleetport.example.com"
        assert forwarded["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"

    async def test_a_malformed_host_or_scheme_is_not_believed(
        self, upstreams: Upstreams, verifier: VerifierControl
    ) -> None:
        hostile = {
            "X-Forwarded-Proto": "javascript",
            "X-Forwarded-Host": "evil.example/path?x=@",
        }
        async with _gateway(upstreams, trusted_proxies="127.0.0.1") as (url, client):
            forwarded = _forwarded(await client.get(PUBLIC, headers=hostile))
        assert forwarded["x-forwarded-proto"] == "http"
        assert forwarded["x-forwarded-host"] == url.removeprefix("http://")

    async def test_rate_limits_count_the_client_behind_the_proxy(
        self, upstreams: Upstreams, verifier: VerifierControl
    ) -> None:
        async with _gateway(
            upstreams,
            trusted_proxies="127.0.0.1",
            rate_limit_per_second=0.001,
            rate_limit_burst=1,
        ) as (_, client):
            first = await client.get(PUBLIC, headers={"X-Forwarded-For": "198.51.100.1"})
            again = await client.get(PUBLIC, headers={"X-Forwarded-For": "198.51.100.1"})
            # A client cannot escape its limit by naming others to the left of itself.
            spoofed = await client.get(
                PUBLIC, headers={"X-Forwarded-For": "192.0.2.77, 198.51.100.1"}
            )
            other = await client.get(PUBLIC, headers={"X-Forwarded-For": "198.51.100.2"})
        assert first.json()["upstream"] == "useradm"
        assert again.status_code == 429
        assert again.json()["error"] == "too many requests"
        assert spoofed.status_code == 429
        assert other.json()["upstream"] == "useradm"

    def test_setting_takes_addresses_and_networks(self) -> None:
        settings = Settings(trusted_proxies="10.1.2.3, 172.16.0.0/12 fd00::/8")
        assert [str(n) for n in settings.trusted_proxies] == [
            "10.1.2.3/32",
            "172.16.0.0/12",
            "fd00::/8",
        ]
        with pytest.raises(ValidationError, match=r"'proxy\.example' is no IP address or network"):
            Settings(trusted_proxies="10.0.0.0/8 proxy.example")


class TestWebUi:
    async def test_ui_files_are_proxied_without_a_token(
        self, upstreams: Upstreams, verifier: VerifierControl, ui: tuple[StubService, str]
    ) -> None:
        stub, ui_url = ui
        async with _gateway(upstreams, ui_addr=ui_url) as (_, client):
            r = await client.get("/ui/env.js?v=1")
        assert r.json()["upstream"] == "ui"
        assert r.json()["raw_path"] == "/ui/env.js"
        assert r.json()["query"] == "v=1"
        assert stub.completed == ["/ui/env.js"]
        assert verifier.calls == []

    async def test_root_redirects_to_the_ui_on_the_clients_scheme_and_host(
        self,
        upstreams: Upstreams,
        verifier: VerifierControl,
        ui: tuple[StubService, str],
        tls: _Tls,
    ) -> None:
        async with _gateway(upstreams, tls.context, ui_addr=ui[1], **tls.settings) as (url, client):
            root = await client.get("/")
            bare = await client.get("/ui")
        assert root.status_code == 301
        assert root.headers["location"] == f"{url}/ui/"
        assert bare.headers["location"] == f"{url}/ui/"
        assert ui[0].completed == []

    async def test_redirect_behind_a_trusted_proxy(
        self, upstreams: Upstreams, verifier: VerifierControl, ui: tuple[StubService, str]
    ) -> None:
        async with _gateway(upstreams, ui_addr=ui[1], trusted_proxies="127.0.0.1") as (_, client):
            r = await client.get(
                "/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "fp.example"}
            )
        assert r.status_code == 301
        assert r.headers["location"] == "https://fp.example/ui/"

    async def test_dot_segments_do_not_leave_the_ui(
        self, upstreams: Upstreams, verifier: VerifierControl, ui: tuple[StubService, str]
    ) -> None:
        async with _gateway(upstreams, ui_addr=ui[1]) as (_, client):
            r = await client.get("/ui/../api/internal/v1/useradm/health")
        assert r.status_code == 404
        assert r.json()["error"] == "not found"
        assert ui[0].started == []

    async def test_without_the_ui_the_root_is_not_found(
        self, upstreams: Upstreams, verifier: VerifierControl
    ) -> None:
        async with _gateway(upstreams) as (_, client):
            r = await client.get("/")
        assert r.status_code == 404
        assert r.json()["error"] == "not found"


class TestDownloadLinks:
    """Links deployments hands out carry the scheme and host the client used."""

    @pytest.fixture
    async def deployments(self, mongo_url: str, db_name: str, tmp_path: Path) -> AsyncIterator[str]:
        settings = DeploymentsSettings(
            mongo_url=mongo_url,
            mongo_db=db_name,
            dev_mode=True,
            storage_path=tmp_path / "storage",
            presign_secret="links-test-secret",
        )
        async with serve(create_deployments(settings)) as url:
            yield url

    async def test_https_at_the_gateway(
        self,
        upstreams: Upstreams,
        verifier: VerifierControl,
        deployments: str,
        tls: _Tls,
    ) -> None:
        async with _gateway(
            upstreams, tls.context, deployments_addr=deployments, **tls.settings
        ) as (url, client):
            r = await client.post(DIRECT_UPLOAD, headers=user_headers())
        assert r.status_code == 200, r.text
        assert r.json()["uri"].startswith(f"{url}/api/")

    async def test_https_at_a_trusted_proxy(
        self, upstreams: Upstreams, verifier: VerifierControl, deployments: str
    ) -> None:
        proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "fleetport.example.com"}
        async with _gateway(
            upstreams, deployments_addr=deployments, trusted_proxies="127.0.0.1"
        ) as (_, client):
            r = await client.post(DIRECT_UPLOAD, headers=user_headers() | proxy)
        assert r.status_code == 200, r.text
        assert r.json()["uri"].startswith("https://fleetport.example.com/api/")

    async def test_an_untrusted_client_cannot_redirect_links(
        self, upstreams: Upstreams, verifier: VerifierControl, deployments: str
    ) -> None:
        forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
        async with _gateway(upstreams, deployments_addr=deployments) as (url, client):
            r = await client.post(DIRECT_UPLOAD, headers=user_headers() | forged)
        assert r.status_code == 200, r.text
        assert r.json()["uri"].startswith(f"{url}/api/")
