"""HTTP surfaces of auditlogs: the management and internal APIs."""

from services.auditlogs.api.internal import router as internal_router
from services.auditlogs.api.management import router as management_router

__all__ = ["internal_router", "management_router"]
