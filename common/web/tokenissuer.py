"""The internal routes of a token issuer (deviceauth, useradm) that the gateway reads.

`GET <prefix>/keys` publishes the public keys that verify the issuer's tokens as a JWK set;
`GET <prefix>/revocations?after=N&wait=S` serves the revocation feed
(`common.core.revocations`) from sequence number N, holding an empty answer back for up to
S seconds until something is revoked (a long poll); `POST <prefix>/used` hears which tokens
the gateway let through (a device's check-in time, a personal access token's last use).
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from common.core.revocations import RevocationFeed
from common.core.tokens import VerifyingKey, public_jwk

__all__ = ["MAX_USES", "MAX_WAIT", "TokenIssuer", "TokenUse", "token_issuer_router"]

# The longest a long poll of the feed is held (seconds).
MAX_WAIT: Final = 10.0
# The most token uses one report may carry.
MAX_USES: Final = 10_000


class TokenUse(BaseModel):
    """A token the gateway let through: its tenant, subject and id."""

    tenant_id: str = Field(max_length=1024)
    sub: str = Field(max_length=1024)
    jti: str = Field(max_length=1024)


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    """What the routes serve: the verifying keys, the running revocation feed, and what
    to do with the tokens the gateway reports used."""

    keys: tuple[VerifyingKey, ...]
    feed: RevocationFeed
    record_use: Callable[[Sequence[TokenUse]], Awaitable[None]]


class TokenUsesIn(BaseModel):
    """A report of tokens used."""

    tokens: list[TokenUse] = Field(max_length=MAX_USES)


class KeySetOut(BaseModel):
    """A JWK set (RFC 7517)."""

    keys: list[dict[str, Any]]


class RevocationOut(BaseModel):
    """Refuse tokens under `key` issued before `not_before`; kept until `expires`."""

    seq: int
    key: str
    not_before: int
    expires: int


class RevocationsOut(BaseModel):
    """A page of the feed, in sequence order; `more` when another page follows at once."""

    revocations: list[RevocationOut]
    more: bool


def token_issuer_router(prefix: str, issuer: Callable[[Request], TokenIssuer]) -> APIRouter:
    """The keys and feed routes under `prefix`, serving what `issuer` returns."""
    router = APIRouter(prefix=prefix, tags=["internal"])
    IssuerDep = Annotated[TokenIssuer, Depends(issuer)]

    @router.get("/keys")
    async def get_token_keys(found: IssuerDep) -> KeySetOut:
        """The public keys that verify this service's tokens (the gateway checks with them)."""
        return KeySetOut(keys=[public_jwk(k) for k in found.keys])

    @router.get("/revocations")
    async def get_token_revocations(
        found: IssuerDep,
        after: Annotated[int, Query(ge=0)] = 0,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0,
    ) -> RevocationsOut:
        """Revocations with a sequence number above `after`; with `wait`, a long poll."""
        page = await found.feed.read(after, wait=wait)
        return RevocationsOut(
            revocations=[RevocationOut(**e.wire()) for e in page],
            more=len(page) >= found.feed.page_size,
        )

    @router.post("/used", status_code=204, response_class=Response)
    async def record_token_use(body: TokenUsesIn, found: IssuerDep) -> None:
        """Record that these tokens were used (the gateway reports them in batches)."""
        await found.record_use(body.tokens)

    return router
