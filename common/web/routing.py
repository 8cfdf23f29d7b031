"""Path conventions: internal routes carry the tenant as a path segment that may be empty."""

from __future__ import annotations

from typing import Final

from starlette.convertors import Convertor, register_url_convertor

__all__ = ["TENANT"]


class _TenantConvertor(Convertor[str]):
    # Single-tenant installs use the empty tenant id, so `/tenants//devices` must match.
    regex = "[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("tenant", _TenantConvertor())

# Use in paths as f"/tenants/{TENANT}/devices"; the handler receives `tenant_id: str`.
TENANT: Final = "{tenant_id:tenant}"
