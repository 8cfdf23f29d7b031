"""HTTP surfaces of useradm: management (v1, v2) and internal APIs."""

from services.useradm.api.internal import router as internal_router
from services.useradm.api.management import management_v1, management_v2
from services.useradm.api.tenantadm import router as tenantadm_router

__all__ = ["internal_router", "management_v1", "management_v2", "tenantadm_router"]
