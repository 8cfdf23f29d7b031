"""Conventions of the internal routes: the tenant is a path segment that may be empty, and a
body that may be one item or a list of them holds at most `MAX_ITEMS`."""

from __future__ import annotations

from typing import Final, TypeVar

from starlette.convertors import Convertor, register_url_convertor

from common.core.errors import BadRequest

__all__ = ["MAX_ITEMS", "TENANT", "items"]

# The outbox merges at most this many items into one request.
MAX_ITEMS: Final = 100
_T = TypeVar("_T")


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


def items(body: _T | list[_T]) -> list[_T]:
    """The items of a body that is one item or a list of at most `MAX_ITEMS` (400 beyond)."""
    listed = body if isinstance(body, list) else [body]
    if len(listed) > MAX_ITEMS:
        raise BadRequest(f"too many bulk items: max {MAX_ITEMS} items per request")
    return listed
