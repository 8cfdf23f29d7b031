"""The devices API: the (unauthenticated) auth request that earns a device its token."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, Response

from common.core.errors import UnsupportedMediaType
from services.deviceauth.api.deps import DeviceAuthAppDep

__all__ = ["PREFIX", "router"]

PREFIX: Final = "/api/devices/v1/authentication"
SIGNATURE_HEADER: Final = "X-MEN-Signature"

router = APIRouter(prefix=PREFIX, tags=["devices"])


@router.post("/auth_requests", response_class=Response)
async def submit_auth_request(request: Request, device_auth: DeviceAuthAppDep) -> Response:
    """Submit a signed auth request: 200 with the raw JWT once accepted, 401 until then."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media and media != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    # The signature covers the exact bytes, so the body is read raw (chunked bodies too).
    body = await request.body()
    token = await device_auth.authenticate(body, signature=request.headers.get(SIGNATURE_HEADER))
    return Response(content=token, media_type="application/jwt")
