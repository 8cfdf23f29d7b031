"""Dependencies shared by useradm's routes: the use-cases, credentials, request parsing.

The lifespan builds one `Services` object; routes take its parts through the `…Dep` aliases.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import Depends, Header, Request
from pydantic import ValidationError

from common.core.errors import BadRequest, UnsupportedMediaType
from common.web.app import services_dependency, services_of
from common.web.identity import UserIdentity, bearer_token
from common.web.tokenissuer import TokenIssuer
from services.useradm.api.schemas import LoginOptionsIn
from services.useradm.app import AuthApp, PlansApp, SettingsApp, UsersApp
from services.useradm.app.errors import BadAuthHeader, InvalidToken
from services.useradm.config import Settings
from services.useradm.models import UserFilter

__all__ = [
    "AuthAppDep",
    "BasicCredentials",
    "Credentials",
    "IfMatch",
    "JsonBody",
    "LoginOptions",
    "PlansAppDep",
    "PresentedToken",
    "Services",
    "ServicesDep",
    "SettingsAppDep",
    "UserFilterDep",
    "UserIdentity",
    "UsersAppDep",
    "token_issuer",
]

_JSON_TYPES: Final = ("application/json",)
_TIME_FILTERS: Final = ("created_after", "created_before", "updated_after", "updated_before")


@dataclass(frozen=True, slots=True)
class Services:
    """What the lifespan builds: the settings and the use-cases."""

    settings: Settings
    users: UsersApp
    auth: AuthApp
    user_settings: SettingsApp
    plans: PlansApp
    issuer: TokenIssuer


ServicesDep = Annotated[Services, Depends(services_dependency(Services))]


def _users(services: ServicesDep) -> UsersApp:
    return services.users


def _auth(services: ServicesDep) -> AuthApp:
    return services.auth


def _user_settings(services: ServicesDep) -> SettingsApp:
    return services.user_settings


def _plans(services: ServicesDep) -> PlansApp:
    return services.plans


UsersAppDep = Annotated[UsersApp, Depends(_users)]
AuthAppDep = Annotated[AuthApp, Depends(_auth)]
SettingsAppDep = Annotated[SettingsApp, Depends(_user_settings)]
PlansAppDep = Annotated[PlansApp, Depends(_plans)]
IfMatch = Annotated[str | None, Header(alias="If-Match")]


def _json_body(request: Request) -> None:
    # Mender refuses bodies that are not declared as JSON (415); an empty body is judged
    # by the route's own validation.
    length = request.headers.get("content-length")
    has_body = "transfer-encoding" in request.headers or (length is not None and length != "0")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if has_body and media and media not in _JSON_TYPES and not media.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type '{media}' not supported, use application/json")


JsonBody = Depends(_json_body)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An email and password from an HTTP Basic Authorization header."""

    email: str
    password: str


def _basic_credentials(request: Request) -> Credentials:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise BadAuthHeader()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadAuthHeader() from None
    email, sep, password = decoded.partition(":")
    if not sep:
        raise BadAuthHeader()
    return Credentials(email=email, password=password)


BasicCredentials = Annotated[Credentials, Depends(_basic_credentials)]


async def _login_options(request: Request) -> LoginOptionsIn:
    body = await request.body()
    if not body.strip():
        return LoginOptionsIn()
    try:
        return LoginOptionsIn.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        if first.get("type") == "json_invalid":
            raise BadRequest("failed to decode request body: invalid JSON") from None
        raise BadRequest(f"invalid login options: {where}: {first.get('msg')}".rstrip()) from None


LoginOptions = Annotated[LoginOptionsIn, Depends(_login_options)]


def _presented_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is not None:
        token = bearer_token(request)
        if token is None:
            raise InvalidToken("malformed Authorization header")
        return token
    # The web UI's websocket requests carry the token in the `JWT` cookie.
    cookie = request.cookies.get("JWT")
    if not cookie:
        raise InvalidToken("authorization not present in header")
    return cookie


PresentedToken = Annotated[str, Depends(_presented_token)]


def _timestamp(name: str, raw: str) -> datetime:
    try:
        seconds = int(raw)
    except ValueError:
        raise BadRequest(f'invalid form parameter "{name}": not an integer') from None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise BadRequest(f'invalid form parameter "{name}": out of range') from None


def _user_filter(request: Request) -> UserFilter:
    query = request.query_params
    ids = query.getlist("id")
    emails = query.getlist("email")
    times = {
        name: _timestamp(name, query[name]) for name in _TIME_FILTERS if query.get(name, "") != ""
    }
    return UserFilter(
        ids=tuple(ids) if "id" in query else None,
        emails=tuple(emails) if "email" in query else None,
        **times,
    )


UserFilterDep = Annotated[UserFilter, Depends(_user_filter)]


def token_issuer(request: Request) -> TokenIssuer:
    """The user tokens' keys and revocation feed (for the routes the gateway reads)."""
    return services_of(request.app, Services).issuer
