"""useradm's collections and indexes, created at start-up."""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, DESCENDING, IndexModel

from common.core.outbox import OUTBOX_INDEXES

__all__ = ["INDEXES", "SETTINGS", "TENANTS", "TOKENS", "USERS", "USER_SETTINGS"]

USERS: Final = "users"
TOKENS: Final = "tokens"
SETTINGS: Final = "settings"
USER_SETTINGS: Final = "user_settings"
TENANTS: Final = "tenants"

INDEXES: Final = {
    USERS: [
        # NOTE: as in Mender, an email is unique across all tenants, not per tenant.
        IndexModel([("email", ASCENDING)], name="email_1", unique=True),
        IndexModel([("tenant_id", ASCENDING), ("created_ts", ASCENDING)], name="tenant_created"),
    ],
    TOKENS: [
        # Personal access token names are unique per user; login tokens have no name.
        IndexModel(
            [("tenant_id", ASCENDING), ("sub", ASCENDING), ("name", ASCENDING)],
            name="tenant_sub_name",
            unique=True,
            partialFilterExpression={"name": {"$exists": True}},
        ),
        IndexModel(
            [("tenant_id", ASCENDING), ("sub", ASCENDING), ("iat", DESCENDING)],
            name="tenant_sub_iat",
        ),
        # Expired tokens disappear by themselves; tokens without `exp` never expire.
        IndexModel([("exp", ASCENDING)], name="exp_ttl", expireAfterSeconds=0),
    ],
    SETTINGS: [IndexModel([("tenant_id", ASCENDING)], name="tenant", unique=True)],
    USER_SETTINGS: [
        IndexModel(
            [("tenant_id", ASCENDING), ("user_id", ASCENDING)], name="tenant_user", unique=True
        )
    ],
    **OUTBOX_INDEXES,
}
