"""The container health check: a real HTTP server answering 204, 503, or nothing at all."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.core.healthcheck import main, problem
from common.localstack.embedded import free_port


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """A server whose `/health` answers 204 and anything else 503; its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


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


class TestMain:
    def test_exit_status_and_reason(self, server: str, capsys: pytest.CaptureFixture[str]) -> None:
        assert main([f"{server}/health"]) == 0
        assert capsys.readouterr().err == ""
        assert main([f"{server}/other"]) == 1
        assert capsys.readouterr().err == f"unhealthy: {server}/other answered 503\n"

    def test_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main([]) == 2
        assert capsys.readouterr().err == "usage: python -m common.core.healthcheck URL\n"

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
