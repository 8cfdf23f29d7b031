"""The route table: which public path prefix goes to which upstream, with which credentials.

A prefix is written as `/api/<surface>/v{N}/<service>[/more/segments]`; `{N}` matches any
API version segment (`v1`, `v2`, `v1alpha1`, ...). Matching is by whole path segments and the
longest matching prefix wins, as Traefik's rule-length priority does for Mender. Nothing
under `/api/internal/` is ever routed, and paths with `.`/`..` segments are refused so a
normalising upstream cannot be reached around the table.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from gateway.config import UPSTREAMS

__all__ = ["ROUTES", "AuthMode", "Route", "RouteTable"]

_VERSION: Final = re.compile(r"v[0-9]+[a-z0-9]*")
_VERSION_PLACEHOLDER: Final = "v{N}"
_ROUTED_SURFACES: Final = frozenset({"devices", "management"})
# How many paths' routes a table remembers (the device paths are a handful; management
# paths carry ids, so the least recently used are forgotten).
_REMEMBERED_PATHS: Final = 4096


class AuthMode(enum.Enum):
    """Which credentials a route needs."""

    NONE = "none"
    DEVICE = "device"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the table: a path prefix, the upstream serving it, its auth mode."""

    prefix: str
    upstream: str
    auth: AuthMode
    surface: str = field(init=False)
    service: str = field(init=False)
    rest: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        segments = self.prefix.split("/")
        if (
            len(segments) < 5
            or segments[:2] != ["", "api"]
            or segments[2] not in _ROUTED_SURFACES
            or segments[3] != _VERSION_PLACEHOLDER
            or not all(segments[4:])
        ):
            raise ValueError(f"bad route prefix {self.prefix!r}")
        if self.upstream not in UPSTREAMS:
            raise ValueError(f"unknown upstream {self.upstream!r}")
        object.__setattr__(self, "surface", segments[2])
        object.__setattr__(self, "service", segments[4])
        object.__setattr__(self, "rest", tuple(segments[5:]))


_D: Final = AuthMode.DEVICE
_U: Final = AuthMode.USER
_N: Final = AuthMode.NONE

ROUTES: Final[tuple[Route, ...]] = (
    # Device admission: the auth request carries no token (it asks for one).
    Route("/api/devices/v{N}/authentication", "deviceauth", _N),
    Route("/api/management/v{N}/devauth", "deviceauth", _U),
    Route("/api/management/v{N}/useradm", "useradm", _U),
    # Login and the single-sign-on flows are how a user gets a token; logout needs one.
    Route("/api/management/v{N}/useradm/auth", "useradm", _N),
    Route("/api/management/v{N}/useradm/auth/logout", "useradm", _U),
    Route("/api/management/v{N}/useradm/oauth2", "useradm", _N),
    Route("/api/management/v{N}/useradm/oidc", "useradm", _N),
    # The caller's organization (Mender's tenantadm), answered by useradm.
    Route("/api/management/v{N}/tenantadm", "useradm", _U),
    Route("/api/devices/v{N}/inventory", "inventory", _D),
    Route("/api/management/v{N}/inventory", "inventory", _U),
    Route("/api/devices/v{N}/deployments", "deployments", _D),
    # Artifact and configuration downloads are signed links checked by deployments.
    Route("/api/devices/v{N}/deployments/download", "deployments", _N),
    Route("/api/management/v{N}/deployments", "deployments", _U),
    Route("/api/devices/v{N}/deviceconfig", "deviceconfig", _D),
    Route("/api/management/v{N}/deviceconfig", "deviceconfig", _U),
    Route("/api/devices/v{N}/deviceconnect", "deviceconnect", _D),
    Route("/api/management/v{N}/deviceconnect", "deviceconnect", _U),
    Route("/api/management/v{N}/auditlogs", "auditlogs", _U),
    Route("/api/devices/v{N}/devicemonitor", "devicemonitor", _D),
    Route("/api/management/v{N}/devicemonitor", "devicemonitor", _U),
    Route("/api/management/v{N}/iot-manager", "iot_manager", _U),
)


class RouteTable:
    """Finds the route of a request path: longest prefix, whole segments.

    The routes of the last few thousand paths are remembered: a device's polls and reports
    are matched once, not on every request.
    """

    def __init__(self, routes: Iterable[Route] = ROUTES) -> None:
        index: dict[tuple[str, str], list[Route]] = {}
        for route in routes:
            index.setdefault((route.surface, route.service), []).append(route)
        for candidates in index.values():
            candidates.sort(key=lambda r: len(r.rest), reverse=True)
            prefixes = [r.rest for r in candidates]
            if len(set(prefixes)) != len(prefixes):
                raise ValueError(f"duplicate route for {candidates[0].prefix}")
        self._index: dict[tuple[str, str], tuple[Route, ...]] = {
            key: tuple(value) for key, value in index.items()
        }
        self._remembered = functools.lru_cache(maxsize=_REMEMBERED_PATHS)(self._find)

    def match(self, path: str) -> Route | None:
        """Return the route serving `path` (already percent-decoded), or None."""
        return self._remembered(path)

    def _find(self, path: str) -> Route | None:
        segments = path.split("/")
        if len(segments) < 5 or segments[0] or segments[1] != "api":
            return None
        candidates = self._index.get((segments[2], segments[4]))
        if candidates is None or not _VERSION.fullmatch(segments[3]):
            return None
        if "." in segments or ".." in segments:
            return None
        for route in candidates:
            depth = len(route.rest)
            if depth == 0 or tuple(segments[5 : 5 + depth]) == route.rest:
                return route
        return None

    def __iter__(self) -> Iterator[Route]:
        """Every route of the table."""
        for candidates in self._index.values():
            yield from candidates
