"""Webhook requests: a JSON body posted to the target, signed when it has a secret."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

import httpx

from services.iot_manager.clients.outbound import OutboundClient
from services.iot_manager.models import WebhookTarget

__all__ = ["ALGORITHM", "ALGORITHM_HEADER", "SIGNATURE_HEADER", "WebhookClient", "signature"]

ALGORITHM_HEADER: Final = "X-Men-Algorithm"
SIGNATURE_HEADER: Final = "X-Men-Signature"
ALGORITHM: Final = "MEN-HMAC-SHA256-Payload"


def signature(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of a body under a webhook's hexadecimal secret."""
    # NOTE: as Mender does, the key is the bytes the hexadecimal secret encodes (its
    # iot-manager decodes the secret when the integration is created).
    return hmac.new(bytes.fromhex(secret), body, hashlib.sha256).hexdigest()


class WebhookClient:
    """Posts event bodies to webhook targets."""

    def __init__(self, outbound: OutboundClient) -> None:
        self._outbound = outbound

    async def post(self, target: WebhookTarget, body: bytes) -> httpx.Response:
        """POST a JSON body (TargetRefused for a forbidden target, httpx errors otherwise)."""
        headers = {"Content-Type": "application/json"}
        if target.secret is not None:
            headers[ALGORITHM_HEADER] = ALGORITHM
            headers[SIGNATURE_HEADER] = signature(target.secret, body)
        return await self._outbound.request("POST", target.url, content=body, headers=headers)
