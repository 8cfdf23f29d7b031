"""The web UI's Enterprise mode: the caller's organization, its roles, and tokens that agree."""

from __future__ import annotations

import httpx

from tests.toolkit import assert_error
from tests.useradm.conftest import MGMT_V1, USERS, bearer, claims_of

TENANT = "/api/management/v1/tenantadm/user/tenant"
ROLES = f"{MGMT_V1}/roles"
ADDONS = [
    {"name": "configure", "enabled": True},
    {"name": "troubleshoot", "enabled": True},
    {"name": "monitor", "enabled": True},
]


class TestUserTenant:
    async def test_the_implicit_organization(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        r = await client.get(TENANT, headers=bearer(token))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "id": "",
            "name": "Fleetport",
            "plan": "enterprise",
            "trial": False,
            "status": "active",
            "addons": ADDONS,
        }

    async def test_the_token_tells_the_same_plan(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        # The web UI compares these with the organization, and asks for a new login when
        # they differ.
        _, token = admin
        claims = claims_of(token)
        organization = (await client.get(TENANT, headers=bearer(token))).json()
        assert claims["mender.plan"] == organization["plan"]
        assert claims["mender.addons"] == organization["addons"]
        assert claims["mender.trial"] is organization["trial"]

    async def test_needs_a_user_token(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(TENANT), 401, "Authorization not present in header")


class TestRoles:
    async def test_every_user_holds_the_role_that_permits_everything(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        me = await client.get(f"{USERS}/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["roles"] == ["RBAC_ROLE_PERMIT_ALL"]
        listed = await client.get(USERS, headers=bearer(token))
        assert [u["roles"] for u in listed.json()] == [["RBAC_ROLE_PERMIT_ALL"]]

    async def test_the_role_permits_any_action_on_anything(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        r = await client.get(ROLES, headers=bearer(token))
        assert r.status_code == 200, r.text
        [role] = r.json()
        assert role["name"] == "RBAC_ROLE_PERMIT_ALL"
        assert role["permissions"] == [{"action": "any", "object": {"type": "any", "value": "any"}}]
