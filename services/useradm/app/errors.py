"""Domain errors of useradm, with their HTTP status and Mender's wording where it has one."""

from __future__ import annotations

from common.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    UnprocessableEntity,
)

__all__ = [
    "BadAuthHeader",
    "CannotModifyPassword",
    "CurrentPasswordMismatch",
    "DuplicateEmail",
    "DuplicateTokenName",
    "DuplicateUserId",
    "EmptyUpdate",
    "InvalidCredentials",
    "InvalidEmail",
    "InvalidPassword",
    "InvalidSettings",
    "InvalidTenant",
    "InvalidToken",
    "InvalidTokenRequest",
    "InvalidUserId",
    "MissingForwardedHeaders",
    "PasswordTooSimilar",
    "ScopeForbidden",
    "SettingsETagMismatch",
    "TokenExpired",
    "TooManyTokens",
    "UserNotFound",
]


class UserNotFound(NotFound):
    """No such user in the caller's tenant (404)."""

    def __init__(self) -> None:
        super().__init__("user not found")


# NOTE: Mender answers a duplicate user with 422, not 409, on every API.
class DuplicateEmail(UnprocessableEntity):
    """Another user has the email; emails are unique across tenants (422)."""

    def __init__(self) -> None:
        super().__init__("user with a given email already exists")


class DuplicateUserId(UnprocessableEntity):
    """Another user has the id chosen for a new user (422)."""

    def __init__(self) -> None:
        super().__init__("user with a given id already exists")


class InvalidEmail(BadRequest):
    """The email is not an ASCII email address of acceptable length (400)."""


class InvalidPassword(BadRequest):
    """The password is missing, too short or too long (400)."""


class InvalidTenant(BadRequest):
    """A tenant id that cannot be used (400)."""


class InvalidUserId(BadRequest):
    """A user id chosen by the caller is not acceptable (400)."""


class EmptyUpdate(BadRequest):
    """An update names nothing to change (400)."""

    def __init__(self) -> None:
        super().__init__("no update information provided")


class PasswordTooSimilar(UnprocessableEntity):
    """The password is part of the email address (422)."""

    def __init__(self) -> None:
        super().__init__("password is too similar to the email")


class CurrentPasswordMismatch(UnprocessableEntity):
    """Changing one's own password or email needs the current password (422)."""

    def __init__(self) -> None:
        super().__init__("current password mismatch")


class CannotModifyPassword(UnprocessableEntity):
    """Only the user may change their own password (422)."""

    def __init__(self) -> None:
        super().__init__("password cannot be modified")


class BadAuthHeader(Unauthorized):
    """Login without a well-formed HTTP Basic Authorization header (401)."""

    def __init__(self) -> None:
        super().__init__("invalid or missing auth header")


class InvalidCredentials(Unauthorized):
    """Unknown email or wrong password (401)."""

    def __init__(self) -> None:
        super().__init__("unauthorized")


class InvalidToken(Unauthorized):
    """A token that is forged, malformed, revoked or of an unknown key or user (401)."""

    def __init__(self, message: str = "invalid jwt") -> None:
        super().__init__(message)


class TokenExpired(Unauthorized):
    """A correctly signed token past its expiry (401)."""

    def __init__(self) -> None:
        super().__init__("token expired")


class ScopeForbidden(Forbidden):
    """The token's scope does not allow the request (403)."""

    def __init__(self) -> None:
        super().__init__("forbidden: the token's scope does not allow this request")


class MissingForwardedHeaders(BadRequest):
    """A verification without `X-Forwarded-Uri`/`X-Forwarded-Method` describing the request."""


class InvalidTokenRequest(BadRequest):
    """A personal access token request with a bad name or lifetime (400)."""


class InvalidSettings(BadRequest):
    """Settings over the limits on their number, names or values (400)."""


class TooManyTokens(UnprocessableEntity):
    """The user holds as many personal access tokens as allowed (422)."""

    def __init__(self) -> None:
        super().__init__("maximum number of personal access tokens reached for this user")


class DuplicateTokenName(Conflict):
    """The user already has a personal access token with that name (409)."""

    def __init__(self) -> None:
        super().__init__("Personal Access Token with a given name already exists")


class SettingsETagMismatch(PreconditionFailed):
    """`If-Match` does not name the stored settings' ETag (412)."""

    def __init__(self) -> None:
        super().__init__("ETag does not match")
