"""HMAC-signed, expiring URLs for the links deployments serves itself.

The canonical string follows Mender's configuration-download signature:
`<METHOD>\\n<path>\\nx-men-expire=<v>\\ntenant_id=<v>\\n`, followed here by any extra signed
query parameters as `<name>=<value>\\n` in name order (links with no extras, such as the
configuration download, sign exactly Mender's string). The signature is the unpadded
base64url HMAC-SHA256 of that string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, urlencode

from common.core.errors import BadRequest, Forbidden

__all__ = ["PARAM_EXPIRE", "PARAM_SIGNATURE", "PARAM_TENANT", "URLSigner", "format_expire"]

PARAM_EXPIRE: Final = "x-men-expire"
PARAM_SIGNATURE: Final = "x-men-signature"
PARAM_TENANT: Final = "tenant_id"
_RESERVED: Final = frozenset({PARAM_EXPIRE, PARAM_SIGNATURE, PARAM_TENANT})


def format_expire(when: datetime) -> str:
    """RFC 3339 UTC with second precision, as the link's `x-men-expire` value."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_expire(raw: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"invalid request parameters: parameter '{PARAM_EXPIRE}' is not a valid timestamp"
        ) from None
    if parsed.tzinfo is None:
        raise BadRequest(
            f"invalid request parameters: parameter '{PARAM_EXPIRE}' is not a valid timestamp"
        )
    return parsed


class URLSigner:
    """Signs and verifies links with one secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def _digest(
        self, method: str, path: str, expire: str, tenant_id: str, extra: Mapping[str, str]
    ) -> bytes:
        canonical = (
            f"{method.upper()}\n{path}\n{PARAM_EXPIRE}={expire}\n{PARAM_TENANT}={tenant_id}\n"
        )
        canonical += "".join(f"{k}={extra[k]}\n" for k in sorted(extra))
        return hmac.new(self._secret, canonical.encode(), hashlib.sha256).digest()

    def sign(
        self,
        *,
        base_url: str,
        method: str,
        path: str,
        expire: datetime,
        tenant_id: str = "",
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """Return the absolute signed URL; `path` is unescaped (it is quoted here)."""
        extra = dict(extra or {})
        if _RESERVED & extra.keys():
            raise ValueError("extra parameters may not use reserved names")
        expire_text = format_expire(expire)
        signature = self._digest(method, path, expire_text, tenant_id, extra)
        params: dict[str, str] = {}
        if tenant_id:
            params[PARAM_TENANT] = tenant_id
        params[PARAM_EXPIRE] = expire_text
        params.update(extra)
        params[PARAM_SIGNATURE] = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        return f"{base_url.rstrip('/')}{quote(path)}?{urlencode(params)}"

    def verify(
        self,
        *,
        method: str,
        path: str,
        query: Mapping[str, str],
        extra_names: tuple[str, ...] = (),
        now: datetime | None = None,
    ) -> None:
        """Check a request's signature: 400 without the parameters, 403 expired or forged."""
        expire_text = query.get(PARAM_EXPIRE, "")
        signature_text = query.get(PARAM_SIGNATURE, "")
        if not expire_text or not signature_text:
            raise BadRequest(
                f"invalid request parameters: {PARAM_EXPIRE} and {PARAM_SIGNATURE} are required"
            )
        expire = _parse_expire(expire_text)
        if (now or datetime.now(UTC)) > expire:
            raise Forbidden("URL expired")
        try:
            given = base64.urlsafe_b64decode(signature_text + "=" * (-len(signature_text) % 4))
        except (binascii.Error, ValueError):
            raise Forbidden("signature invalid") from None
        extra = {name: query[name] for name in extra_names if name in query}
        expected = self._digest(method, path, expire_text, query.get(PARAM_TENANT, ""), extra)
        if not hmac.compare_digest(expected, given):
            raise Forbidden("signature invalid")
