"""The check every refusal gets: Mender's error body, message and request id."""

from __future__ import annotations

import httpx

__all__ = ["assert_error"]


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """Check a refusal's status, error body, echoed request id and message; return the message."""
    assert response.status_code == status, response.text
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error", "request_id"}, body
    message = body["error"]
    assert isinstance(message, str), body
    assert message, "an empty error message"
    assert body["request_id"], body
    assert body["request_id"] == response.headers.get("X-MEN-RequestID"), response.headers
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message
