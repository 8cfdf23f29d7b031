"""Settings of the useradm service (environment prefix `USERADM_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.core.settings import BaseServiceSettings
from services.useradm.service import SERVICE

__all__ = ["SERVICE_NAME", "DatabaseSettings", "Settings"]

SERVICE_NAME: Final = "useradm"


class DatabaseSettings(BaseServiceSettings):
    """What working on useradm's users needs (`create-user`): the database, password hashing."""

    model_config = SettingsConfigDict(env_prefix=SERVICE.env_prefix, extra="ignore", frozen=True)

    mongo_db: str = SERVICE.database
    # bcrypt work factor of new password hashes (Mender's default cost is 10).
    bcrypt_cost: Annotated[int, Field(ge=4, le=15)] = 10


class Settings(DatabaseSettings):
    """Configuration of useradm; every field is read from `USERADM_<NAME>`."""

    # PEM private key (RSA → RS256, Ed25519 → EdDSA) that signs user tokens. A file named
    # `private.id.<N>.pem` gives the key id N (else 0); other `private.id.<M>.pem` files in
    # the same directory are loaded too, so tokens of rotated-out keys keep verifying.
    # Without it, development mode signs with a key generated at start-up.
    server_priv_key_path: Path | None = None
    # An older key whose tokens are still accepted, whatever their key id (key rotation).
    server_fallback_priv_key_path: Path | None = None
    jwt_issuer: str = "mender.useradm"
    # Lifetime of a login token, in seconds.
    jwt_exp_timeout: Annotated[int, Field(ge=1)] = 604800
    # Login tokens kept per user (the oldest go first); 0 means unlimited.
    limit_sessions_per_user: Annotated[int, Field(ge=0)] = 10
    # Personal access tokens a user may hold; 0 means unlimited.
    limit_tokens_per_user: Annotated[int, Field(ge=0)] = 10
    # auditlogs' internal address: operators' changes to users and tokens are recorded there.
    auditlogs_addr: str | None = None

    @model_validator(mode="after")
    def _require_key_outside_development(self) -> Settings:
        if not self.dev_mode and self.server_priv_key_path is None:
            raise ValueError("server_priv_key_path is required unless dev_mode is enabled")
        return self
