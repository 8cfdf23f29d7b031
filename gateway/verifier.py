"""The verifier client: asks deviceauth or useradm about a token over their internal APIs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import aiohttp

from gateway.auth import Denial, Grant, VerifierUnavailable
from gateway.config import Settings
from gateway.headers import HOP_BY_HOP
from gateway.routes import AuthMode

__all__ = ["DEVICE_VERIFY_PATH", "USER_VERIFY_PATH", "HttpVerifier"]

DEVICE_VERIFY_PATH: Final = "/api/internal/v1/devauth/tokens/verify"
USER_VERIFY_PATH: Final = "/api/internal/v1/useradm/auth/verify"
# A verifier's answer is a short error document; more than this is not relayed.
_MAX_BODY: Final = 64 * 1024
_log = logging.getLogger("gateway.verifier")
_RBAC_PREFIX: Final = "x-men-rbac-"
_NOT_RELAYED: Final = HOP_BY_HOP | {b"content-length", b"x-men-requestid", b"date", b"server"}


class HttpVerifier:
    """Calls the verify endpoint of the service that issues the token's kind."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._targets: dict[AuthMode, tuple[str, str | None]] = {
            AuthMode.DEVICE: (
                "deviceauth",
                f"{settings.deviceauth_addr}{DEVICE_VERIFY_PATH}"
                if settings.deviceauth_addr
                else None,
            ),
            AuthMode.USER: (
                "useradm",
                f"{settings.useradm_addr}{USER_VERIFY_PATH}" if settings.useradm_addr else None,
            ),
        }
        self._timeout = aiohttp.ClientTimeout(
            total=settings.verify_timeout, sock_connect=settings.connect_timeout
        )

    async def verify(
        self, mode: AuthMode, token: str, forwarded: Sequence[tuple[str, str]]
    ) -> Grant | Denial:
        """Return the issuer's verdict; raise VerifierUnavailable when it cannot answer."""
        name, url = self._targets[mode]
        if url is None:
            raise VerifierUnavailable(503, f"{name} is not available")
        headers = [("Authorization", f"Bearer {token}"), *forwarded]
        try:
            async with self._session.get(
                url, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return Grant(
                        tuple(
                            (key, value)
                            for key, value in resp.headers.items()
                            if key.lower().startswith(_RBAC_PREFIX)
                        )
                    )
                body = bytearray()
                async for chunk in resp.content.iter_chunked(16 * 1024):
                    body += chunk
                    if len(body) >= _MAX_BODY:
                        del body[_MAX_BODY:]
                        break
                relayed = tuple(
                    (key, value)
                    for key, value in resp.raw_headers
                    if key.lower() not in _NOT_RELAYED
                )
                return Denial(resp.status, body=bytes(body), headers=relayed)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            _log.warning("token check by %s failed: %s", name, exc or type(exc).__name__)
            raise VerifierUnavailable(502, f"{name} did not answer the token check") from exc
