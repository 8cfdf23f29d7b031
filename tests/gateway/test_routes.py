"""The route table: prefixes, auth modes, longest-prefix wins, and the OpenAPI contract."""

from __future__ import annotations

import pytest

from gateway.routes import ROUTES, AuthMode, Route, RouteTable
from tests.contract.facts import documents, operations, services

# Spec directory → the upstream name in the gateway's settings (workflows has no public API).
SPEC_UPSTREAM = {
    "auditlogs": "auditlogs",
    "deployments": "deployments",
    "deviceauth": "deviceauth",
    "deviceconfig": "deviceconfig",
    "deviceconnect": "deviceconnect",
    "devicemonitor": "devicemonitor",
    "inventory": "inventory",
    "iot-manager": "iot_manager",
    "useradm": "useradm",
}
# Public operations that need no token (they are how a client gets one, or signed links).
PUBLIC = {
    "/api/devices/v1/authentication/auth_requests",
    "/api/management/v1/useradm/auth/login",
    "/api/devices/v1/deployments/download/configuration/{deployment_id}/{device_type}/{device_id}",
}


def _spec_paths() -> list[tuple[str, str, str]]:
    """(document, upstream, path) of every documented path of every service."""
    return sorted(
        {
            (op.document, SPEC_UPSTREAM.get(service, ""), op.path)
            for service in services()
            for op in operations(service)
        }
    )


def _concrete(path: str) -> str:
    # Fill `{param}` segments with a plausible value.
    return "/".join("0a1b2c3d" if s.startswith("{") else s for s in path.split("/"))


table = RouteTable()


class TestContract:
    @pytest.mark.parametrize(("spec", "upstream", "path"), _spec_paths())
    def test_spec_path_routing(self, spec: str, upstream: str, path: str) -> None:
        route = table.match(_concrete(path))
        if spec.startswith("internal"):
            assert route is None, f"{path} must never be routed"
            return
        assert route is not None, f"{path} is not routed"
        assert route.upstream == upstream
        expected = AuthMode.NONE if path in PUBLIC else None
        if expected is not None:
            assert route.auth is AuthMode.NONE
        elif spec.startswith("devices"):
            assert route.auth is AuthMode.DEVICE
        else:
            assert route.auth is AuthMode.USER

    def test_every_service_with_a_public_api_has_an_upstream(self) -> None:
        public = {
            service
            for service in services()
            if any(not document.startswith("internal") for document in documents(service))
        }
        assert public == set(SPEC_UPSTREAM)
        assert len(_spec_paths()) > 100


class TestMatch:
    @pytest.mark.parametrize(
        ("path", "upstream", "auth"),
        [
            ("/api/devices/v1/authentication/auth_requests", "deviceauth", AuthMode.NONE),
            ("/api/management/v2/devauth/devices", "deviceauth", AuthMode.USER),
            ("/api/management/v1/useradm/auth/login", "useradm", AuthMode.NONE),
            ("/api/management/v1/useradm/auth/logout", "useradm", AuthMode.USER),
            ("/api/management/v1/useradm/oauth2/google", "useradm", AuthMode.NONE),
            ("/api/management/v1/useradm/oidc/callback", "useradm", AuthMode.NONE),
            ("/api/management/v1/useradm/users/me", "useradm", AuthMode.USER),
            ("/api/management/v1/useradm/authx", "useradm", AuthMode.USER),
            ("/api/devices/v1/deployments/download/abc", "deployments", AuthMode.NONE),
            ("/api/devices/v1/deployments/downloads", "deployments", AuthMode.DEVICE),
            ("/api/devices/v2/deployments/device/deployments/next", "deployments", AuthMode.DEVICE),
            ("/api/management/v1alpha1/deployments/software", "deployments", AuthMode.USER),
            ("/api/management/v2alpha1/inventory/identities/search", "inventory", AuthMode.USER),
            ("/api/devices/v1/deviceconnect/connect", "deviceconnect", AuthMode.DEVICE),
            ("/api/management/v1/auditlogs/logs", "auditlogs", AuthMode.USER),
            ("/api/management/v1/tenantadm/user/tenant", "useradm", AuthMode.USER),
            ("/api/devices/v1/devicemonitor/alert", "devicemonitor", AuthMode.DEVICE),
            ("/api/management/v1/iot-manager/integrations", "iot_manager", AuthMode.USER),
            ("/api/management/v1/inventory", "inventory", AuthMode.USER),
        ],
    )
    def test_routes(self, path: str, upstream: str, auth: AuthMode) -> None:
        route = table.match(path)
        assert route is not None
        assert (route.upstream, route.auth) == (upstream, auth)

    def test_logout_ends_the_session(self) -> None:
        route = table.match("/api/management/v1/useradm/auth/logout")
        assert route is not None
        assert route.ends_session
        login = table.match("/api/management/v1/useradm/auth/login")
        assert login is not None
        assert not login.ends_session

    @pytest.mark.parametrize(
        "path",
        [
            "/",
            "/api",
            "/api/devices",
            "/api/devices/v1",
            "/api/internal/v1/devauth/tokens/verify",
            "/api/internal/v1/useradm/auth/verify",
            "/api/devices/v1/unknown/x",
            "/api/devices/x1/inventory/device",
            "/api/devices/V1/inventory/device",
            "/api/devices/v/inventory",
            "/api/management/v1/useradmx/users",
            "/api/devices/v1/devauth/x",
            "/api/devices/v1/useradm/auth/login",
            "//api/management/v1/useradm/users",
            "api/management/v1/useradm/users",
            "/API/management/v1/useradm/users",
            "/api/devices/v1/deployments/download/../../../internal/v1/deployments/health",
            "/api/management/v1/useradm/auth/./../users",
            "/ui/index.html",
        ],
    )
    def test_unrouted(self, path: str) -> None:
        assert table.match(path) is None


class TestTableDefinition:
    def test_bad_prefixes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="bad route prefix"):
            Route("/api/internal/v{N}/x", "useradm", AuthMode.NONE)
        with pytest.raises(ValueError, match="bad route prefix"):
            Route("/api/devices/v1/x", "useradm", AuthMode.NONE)
        with pytest.raises(ValueError, match="unknown upstream"):
            Route("/api/devices/v{N}/x", "nosuch", AuthMode.NONE)

    def test_duplicates_are_refused(self) -> None:
        twice = (ROUTES[0], Route(ROUTES[0].prefix, "useradm", AuthMode.USER))
        with pytest.raises(ValueError, match="duplicate"):
            RouteTable(twice)

    def test_iterates_every_route(self) -> None:
        assert sorted(r.prefix for r in table) == sorted(r.prefix for r in ROUTES)
