"""The caller's organization and roles, as the web UI's Enterprise mode asks for them.

Fleetport has no tenant administration: every tenant (on a single-tenant install, the one
implicit organization) is on the Enterprise plan with every add-on, audit logs included,
and, until roles can be defined, every user holds the role that permits everything. Tokens
carry the same plan and add-ons (`mender.plan`, `mender.addons`, `mender.trial`), so the
web UI finds its session and the organization in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ADDONS",
    "PERMIT_ALL",
    "PERMIT_ALL_ROLE",
    "PLAN",
    "Organization",
    "Role",
    "organization_claims",
    "organization_of",
]

PLAN: Final = "enterprise"
# Device configuration, remote access (troubleshoot) and monitoring.
ADDONS: Final = ("configure", "troubleshoot", "monitor")
# The name Mender gives the role whose holders may do anything.
PERMIT_ALL: Final = "RBAC_ROLE_PERMIT_ALL"
_SINGLE_TENANT_NAME: Final = "Fleetport"


@dataclass(frozen=True, slots=True)
class Organization:
    """A tenant as an organization: its plan and add-ons."""

    id: str
    name: str
    plan: str = PLAN
    trial: bool = False
    addons: tuple[str, ...] = ADDONS

    def addon_list(self) -> list[dict[str, Any]]:
        """The add-ons as Mender lists them: `{"name", "enabled"}` each."""
        return [{"name": name, "enabled": True} for name in self.addons]


@dataclass(frozen=True, slots=True)
class Role:
    """A role: what its holders may do (`action` on `object`, "any" for everything)."""

    name: str
    description: str
    permissions: tuple[tuple[str, str, str], ...]  # (action, object type, object value)


PERMIT_ALL_ROLE: Final = Role(
    name=PERMIT_ALL,
    description="Full access: every action on every object.",
    permissions=(("any", "any", "any"),),
)


def organization_of(tenant_id: str) -> Organization:
    """The organization of a tenant (the implicit one of a single-tenant install)."""
    return Organization(id=tenant_id, name=tenant_id or _SINGLE_TENANT_NAME)


def organization_claims(tenant_id: str) -> dict[str, Any]:
    """The claims of a user token that tell the organization's plan and add-ons."""
    org = organization_of(tenant_id)
    return {"mender.plan": org.plan, "mender.addons": org.addon_list(), "mender.trial": org.trial}
