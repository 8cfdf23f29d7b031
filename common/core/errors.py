"""Domain errors that carry their HTTP status, rendered once by the app factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "BadGateway",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InternalError",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServiceError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedMediaType",
]


class ServiceError(Exception):
    """Base of every error a service reports to its caller.

    `message` becomes the `error` field of the body; `body` replaces the whole body when an
    endpoint must answer with a document instead (Mender's 409 with the conflicting device).
    """

    status_code: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        self.body = body


class BadRequest(ServiceError):
    """The request is malformed (400)."""

    status_code = 400


class Unauthorized(ServiceError):
    """Missing or invalid credentials (401)."""

    status_code = 401


class Forbidden(ServiceError):
    """Valid credentials without the right to act (403)."""

    status_code = 403


class NotFound(ServiceError):
    """The resource does not exist (404)."""

    status_code = 404


class Conflict(ServiceError):
    """The change conflicts with existing state (409)."""

    status_code = 409


class PreconditionFailed(ServiceError):
    """An `If-Match` precondition did not hold (412)."""

    status_code = 412


class PayloadTooLarge(ServiceError):
    """The request body exceeds the configured limit (413)."""

    status_code = 413


class UnsupportedMediaType(ServiceError):
    """The request body has the wrong content type (415)."""

    status_code = 415


class UnprocessableEntity(ServiceError):
    """The request is well-formed but cannot be carried out (422)."""

    status_code = 422


class TooManyRequests(ServiceError):
    """The caller exceeded its rate limit (429)."""

    status_code = 429


class InternalError(ServiceError):
    """An unexpected failure inside the service (500)."""

    status_code = 500


class BadGateway(ServiceError):
    """A peer service answered with an error (502)."""

    status_code = 502


class ServiceUnavailable(ServiceError):
    """A dependency is unreachable (503)."""

    status_code = 503
