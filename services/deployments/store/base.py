"""What the Mongo stores of deployments share: the tenant-scoped collections, text filters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document, TenantCollection, atomically
from common.core.outbox import Effect, Outbox
from services.deployments.store import TextMatch

__all__ = ["MongoCollections", "names_query", "text_query"]


class MongoCollections:
    """One Mongo database of deployments, and its outbox; every query goes through a
    tenant's collection."""

    def __init__(self, db: AsyncDatabase[Document], *, outbox: Outbox) -> None:
        self._db = db
        self._outbox = outbox

    def _c(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    async def _update_with_effects(
        self,
        name: str,
        tenant_id: str,
        query: Document,
        update: Document,
        effects: Sequence[Effect],
    ) -> bool:
        """Update one document and, if it matched, record `effects` in the same transaction."""

        async def work(session: AsyncClientSession) -> bool:
            result = await self._c(name, tenant_id).update_one(query, update, session=session)
            if result.matched_count == 0:
                return False
            await self._outbox.add(effects, session=session)
            return True

        return await atomically(self._db.client, work)


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
