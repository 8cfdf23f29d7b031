"""useradm's internal API, as auditlogs uses it: a user's email by id."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

from common.core.peers import PeerClient

__all__ = ["HttpUseradmClient", "UsersClient"]


class UsersClient(Protocol):
    """What auditlogs asks useradm."""

    async def email_of(self, tenant_id: str, user_id: str) -> str | None:
        """The user's email; None when there is no such user (any more)."""
        ...


class HttpUseradmClient(PeerClient):
    """useradm's internal API over httpx."""

    peer_name = "useradm"

    async def email_of(self, tenant_id: str, user_id: str) -> str | None:
        """`GET …/tenants/{tenant}/users?id=…`: the user's email, None when unknown."""
        path = f"/api/internal/v1/useradm/tenants/{quote(tenant_id, safe='')}/users"
        response = await self.request("GET", path, params={"id": user_id})
        for user in response.json():
            if isinstance(user, dict) and user.get("id") == user_id:
                email = user.get("email")
                return email if isinstance(email, str) else None
        return None
