"""Base of the typed httpx clients services use to call each other's internal APIs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any, Final

import httpx

from common.core.errors import BadGateway, ServiceUnavailable
from common.core.requestid import REQUEST_ID_HEADER, current_request_id

__all__ = ["PeerClient"]

_log = logging.getLogger("common.core.peers")
_RETRY_STATUSES: Final = frozenset({502, 503, 504})


class PeerClient:
    """Calls one peer service: request-id propagation, timeouts, retries with backoff.

    Subclasses add one typed method per internal endpoint they use. Failures map to
    `ServiceUnavailable` (peer unreachable) or `BadGateway` (peer answered unexpectedly).
    """

    peer_name: str = "peer"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        retries: int = 2,
        backoff: float = 0.2,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._retries = retries
        self._backoff = backoff

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        expect: Collection[int] = (200,),
    ) -> httpx.Response:
        """Send a request; retry transport errors and 502-504; check the status."""
        headers = {REQUEST_ID_HEADER: current_request_id()} if current_request_id() else {}
        url = self._base_url + path
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, url, json=json, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                if attempt >= self._retries:
                    raise ServiceUnavailable(f"{self.peer_name} is unreachable: {exc}") from exc
            else:
                if response.status_code in expect:
                    return response
                if response.status_code not in _RETRY_STATUSES or attempt >= self._retries:
                    _log.warning(
                        "%s %s %s answered %s: %s",
                        self.peer_name,
                        method,
                        path,
                        response.status_code,
                        response.text[:200],
                    )
                    raise BadGateway(
                        f"{self.peer_name} answered {response.status_code} to {method} {path}"
                    )
            attempt += 1
            await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
