"""Device API: polling for updates, status and log reports, and the signed download routes.

The download routes (`/api/devices/v1/deployments/download/...`) are reached without a
device token: the gateway routes them unauthenticated and the signature is the credential.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Scope

from common.core.errors import BadRequest, ServiceError
from common.web.app import services_of
from common.web.identity import DeviceIdentity, device_caller
from common.web.lean import LeanAnswer, LeanHandler
from services.deployments.api.deps import (
    DeviceDeploymentsAppDep,
    DownloadsAppDep,
    ExternalURL,
    Services,
)
from services.deployments.api.schemas import (
    InstructionsOut,
    LogRequest,
    NextV1Request,
    NextV2Request,
    StatusReport,
)
from services.deployments.app.device import Unchanged
from services.deployments.app.downloads import ARTIFACT_CONTENT_TYPE
from services.deployments.models import LogMessage, NextRequest

__all__ = ["LEAN_ROUTES", "PREFIX_V1", "PREFIX_V2", "router"]

PREFIX_V1: Final = "/api/devices/v1/deployments"
PREFIX_V2: Final = "/api/devices/v2/deployments"
_MAX_PROVIDE: Final = 4096
_MAX_PROVIDES: Final = 1000

router = APIRouter(tags=["devices"])


def _attachment(filename: str) -> str:
    """`Content-Disposition` for a download: an ASCII name plus the exact UTF-8 one."""
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    value = f'attachment; filename="{plain}"'
    if plain != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def _next_request(provides: dict[str, object]) -> NextRequest:
    if len(provides) > _MAX_PROVIDES:
        raise BadRequest("invalid schema: too many provides")
    values: dict[str, str] = {}
    for key, value in provides.items():
        if not isinstance(value, str):
            raise BadRequest(f"invalid schema: {key}: must be a string")
        if len(key) > _MAX_PROVIDE or len(value) > _MAX_PROVIDE:
            raise BadRequest(f"invalid schema: {key}: too long")
        values[key] = value
    device_type = values.pop("device_type", "")
    artifact_name = values.pop("artifact_name", "")
    if not artifact_name:
        raise BadRequest("artifact_name: cannot be blank.")
    if not device_type:
        raise BadRequest("device_type: cannot be blank.")
    return NextRequest(device_type=device_type, artifact_name=artifact_name, provides=values)


def _v1_provides(body: NextV1Request) -> dict[str, object]:
    provides: dict[str, object] = dict(body.model_extra or {})
    provides["device_type"] = body.device_type
    provides["artifact_name"] = body.artifact_name
    return provides


# A poll may send back the `ETag` of its last answer (`app.polltags`): an extension the
# Mender client does not use; without it the status and body are Mender's.
IfNoneMatch = Annotated[str | None, Header()]


async def _answer(
    identity_tenant: str,
    device_id: str,
    request: NextRequest,
    device: DeviceDeploymentsAppDep,
    external_url: str,
    if_none_match: str | None,
) -> Response:
    instructions = await device.next_for_device(
        identity_tenant,
        device_id,
        request=request,
        external_url=external_url,
        if_none_match=if_none_match,
    )
    if instructions is None:
        return Response(status_code=204)
    if isinstance(instructions, Unchanged):
        return Response(status_code=304, headers={"ETag": instructions.tag})
    body = InstructionsOut.of(instructions).model_dump_json(exclude_none=True)
    return Response(body, media_type="application/json", headers={"ETag": instructions.tag})


@router.get(PREFIX_V1 + "/device/deployments/next", response_model=InstructionsOut)
async def check_update(
    identity: DeviceIdentity,
    device: DeviceDeploymentsAppDep,
    external_url: ExternalURL,
    artifact_name: Annotated[str, Query()] = "",
    device_type: Annotated[str, Query()] = "",
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Next update for the device (204: nothing to do); query artifact_name, device_type."""
    request = _next_request({"artifact_name": artifact_name, "device_type": device_type})
    return await _answer(
        identity.tenant, identity.subject, request, device, external_url, if_none_match
    )


@router.post(PREFIX_V1 + "/device/deployments/next", response_model=InstructionsOut)
async def check_update_post(
    body: NextV1Request,
    identity: DeviceIdentity,
    device: DeviceDeploymentsAppDep,
    external_url: ExternalURL,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Next update for the device, from its provides (v1 body)."""
    request = _next_request(_v1_provides(body))
    return await _answer(
        identity.tenant, identity.subject, request, device, external_url, if_none_match
    )


@router.post(PREFIX_V2 + "/device/deployments/next", response_model=InstructionsOut)
async def check_update_v2(
    body: NextV2Request,
    identity: DeviceIdentity,
    device: DeviceDeploymentsAppDep,
    external_url: ExternalURL,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Next update for the device, from `device_provides` (what the client tries first)."""
    request = _next_request(dict(body.device_provides))
    return await _answer(
        identity.tenant, identity.subject, request, device, external_url, if_none_match
    )


@router.put(PREFIX_V1 + "/device/deployments/{id}/status", status_code=204)
async def put_deployment_status_for_device(
    id: str, body: StatusReport, identity: DeviceIdentity, device: DeviceDeploymentsAppDep
) -> Response:
    """Report the device's progress; 409 once the deployment was aborted for it."""
    await device.report_status(
        identity.tenant, identity.subject, id, status=body.status, substate=body.substate
    )
    return Response(status_code=204)


@router.put(PREFIX_V1 + "/device/deployments/{id}/log", status_code=204)
async def put_deployment_log_for_device(
    id: str, body: LogRequest, identity: DeviceIdentity, device: DeviceDeploymentsAppDep
) -> Response:
    """Upload the device's deployment log."""
    messages = [
        LogMessage(timestamp=m.timestamp, level=m.level, message=m.message) for m in body.messages
    ]
    await device.save_log(identity.tenant, identity.subject, id, messages)
    return Response(status_code=204)


@router.get(PREFIX_V1 + "/download/configuration/{deployment_id}/{device_type}/{device_id}")
async def download_configuration(
    deployment_id: str,
    device_type: str,
    device_id: str,
    request: Request,
    downloads: DownloadsAppDep,
) -> Response:
    """The configuration artifact of a configuration deployment (signed link)."""
    artifact = await downloads.configuration(
        path=request.url.path,
        query=request.query_params,
        deployment_id=deployment_id,
        device_type=device_type,
        device_id=device_id,
    )
    return Response(
        artifact,
        media_type=ARTIFACT_CONTENT_TYPE,
        headers={"Content-Disposition": 'attachment; filename="artifact.mender"'},
    )


@router.get(PREFIX_V1 + "/download/objects/{key:path}")
async def download_object(key: str, request: Request, downloads: DownloadsAppDep) -> Response:
    """Stream an artifact file (signed link); supports a single byte `Range`."""
    download = await downloads.open(
        key,
        path=request.url.path,
        query=request.query_params,
        range_header=request.headers.get("range"),
    )
    headers = {
        "Content-Length": str(download.length),
        "Accept-Ranges": "bytes",
    }
    if download.filename:
        headers["Content-Disposition"] = _attachment(download.filename)
    if download.partial:
        headers["Content-Range"] = f"bytes {download.start}-{download.end}/{download.size}"
    return StreamingResponse(
        download.chunks,
        status_code=206 if download.partial else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


@router.put(PREFIX_V1 + "/download/objects/{key:path}")
async def upload_object(key: str, request: Request, downloads: DownloadsAppDep) -> Response:
    """Receive a direct upload (signed PUT link)."""
    await downloads.receive(
        key, path=request.url.path, query=request.query_params, chunks=request.stream()
    )
    return Response(status_code=200)


# The idle poll, answered before FastAPI's routing (`common.web.lean`): a well-formed poll
# of a device that no active deployment lists gets its 204 from memory (`Reach`). Every
# other poll, malformed ones included, is declined and answered by the routes above.
_IDLE: Final = LeanAnswer(204)


def _json(conn: HTTPConnection, body: bytes) -> object:
    """The body as the routes read a JSON body; ValueError when they would not."""
    content_type = conn.headers.get("content-type")
    if not body or (
        content_type is not None
        and content_type.split(";")[0].strip().lower() != "application/json"
    ):
        raise ValueError("not a JSON body")
    return json.loads(body)


def _lean_next(provides: Callable[[HTTPConnection, bytes], dict[str, object]]) -> LeanHandler:
    """A lean `next` route whose provides are read from the request by `provides`."""

    async def next_if_idle(scope: Scope, body: bytes) -> LeanAnswer | None:
        conn = HTTPConnection(scope)
        try:
            identity = device_caller(conn)
            _next_request(provides(conn, body))
        except (ServiceError, ValidationError, ValueError):
            return None
        device = services_of(scope["app"], Services).device
        return _IDLE if await device.idle(identity.tenant, identity.subject) else None

    return next_if_idle


LEAN_ROUTES: Final[dict[tuple[str, str], LeanHandler]] = {
    ("GET", PREFIX_V1 + "/device/deployments/next"): _lean_next(
        lambda conn, _: {
            "artifact_name": conn.query_params.get("artifact_name", ""),
            "device_type": conn.query_params.get("device_type", ""),
        }
    ),
    ("POST", PREFIX_V1 + "/device/deployments/next"): _lean_next(
        lambda conn, body: _v1_provides(NextV1Request.model_validate(_json(conn, body)))
    ),
    ("POST", PREFIX_V2 + "/device/deployments/next"): _lean_next(
        lambda conn, body: dict(NextV2Request.model_validate(_json(conn, body)).device_provides)
    ),
}
