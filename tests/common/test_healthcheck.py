"""The container health check: a real HTTP server answering 204, 503, or nothing at all."""

from __future__ import annotations

import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from common.core.certificates import ensure_self_signed
from common.core.healthcheck import main, problem
from common.localstack.embedded import free_port


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def server() -> Iterator[str]:
    """A server whose `/health` answers 204 and anything else 503; its base URL."""
    yield from _serve()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    """The same over HTTPS, with a self-signed certificate for another name."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["fleetport.example.com"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(context)


class TestProblem:
    def test_healthy(self, server: str) -> None:
        assert problem(f"{server}/health") is None

    def test_error_status(self, server: str) -> None:
        assert problem(f"{server}/other") == f"{server}/other answered 503"

    def test_nothing_listening(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/health"
        reason = problem(url)
        assert reason is not None
        assert reason.startswith(f"{url} is unreachable: ")
        assert "refused" in reason


class TestTls:
    def test_an_unverifiable_certificate_is_a_problem(self, tls_server: str) -> None:
        reason = problem(f"{tls_server}/health")
        assert reason is not None
        assert "CERTIFICATE_VERIFY_FAILED" in reason

    def test_insecure_accepts_any_certificate(
        self, tls_server: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert problem(f"{tls_server}/health", verify=False) is None
        assert main(["--insecure", f"{tls_server}/health"]) == 0
        assert main(["--insecure", f"{tls_server}/other"]) == 1
        assert capsys.readouterr().err == f"unhealthy: {tls_server}/other answered 503\n"


class TestMain:
    def test_exit_status_and_reason(self, server: str, capsys: pytest.CaptureFixture[str]) -> None:
        assert main([f"{server}/health"]) == 0
        assert capsys.readouterr().err == ""
        assert main([f"{server}/other"]) == 1
        assert capsys.readouterr().err == f"unhealthy: {server}/other answered 503\n"

    def test_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main([]) == 2
        usage = "usage: python -m common.core.healthcheck [--insecure] URL\n"
        assert capsys.readouterr().err == usage

    def test_as_the_container_runs_it(self, server: str) -> None:
        for path, status in (("/health", 0), ("/other", 1)):
            run = subprocess.run(
                [sys.executable, "-m", "common.core.healthcheck", server + path],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert run.returncode == status, run.stderr
