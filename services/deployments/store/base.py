"""What the Mongo stores of deployments share: the tenant-scoped collections, text filters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document, TenantCollection
from services.deployments.store import TextMatch

__all__ = ["MongoCollections", "names_query", "text_query"]


class MongoCollections:
    """One Mongo database of deployments; every query goes through a tenant's collection."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db

    def _c(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)


def text_query(match: TextMatch) -> Any:
    """The query value of a text filter."""
    escaped = re.escape(match.value)
    if match.kind == "exact":
        return match.value
    if match.kind == "prefix":
        return {"$regex": "^" + escaped}
    return {"$regex": escaped, "$options": "i"}


def names_query(field: str, matches: Sequence[TextMatch]) -> Document:
    """A query matching `field` against any of the text filters (empty: anything)."""
    if not matches:
        return {}
    exact = [m.value for m in matches if m.kind == "exact"]
    others = [{field: text_query(m)} for m in matches if m.kind != "exact"]
    if exact:
        others.append({field: {"$in": exact}})
    return others[0] if len(others) == 1 else {"$or": others}
