"""Management API of telemetry: the latest sample, a downsampled range, a live stream of a
device's samples (server-sent events), and the thresholds that raise alerts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.devicemonitor.api.deps import JsonBody, SettingsDep, TelemetryAppDep, UserIdentity
from services.devicemonitor.api.management import PREFIX
from services.devicemonitor.app.errors import InvalidRequest
from services.devicemonitor.models import Threshold

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, tags=["management"])

_EVENT_STREAM: Final = "text/event-stream"


class PointOut(BaseModel):
    """A bucket: its start, the lowest, mean and highest reading in it, and their count."""

    t: datetime
    min: float
    avg: float
    max: float
    n: int


class SeriesOut(BaseModel):
    """A metric's buckets, oldest first."""

    metric: str
    unit: str
    points: list[PointOut]


class RangeOut(BaseModel):
    """A downsampled range: its bounds, bucket size in seconds and a series per metric."""

    model_config = ConfigDict(populate_by_name=True)

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    bucket: int
    series: list[SeriesOut]


def _rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@router.get("/devices/{device_id}/telemetry/latest")
async def get_latest_telemetry(
    device_id: str, identity: UserIdentity, telemetry: TelemetryAppDep
) -> dict[str, Any]:
    """The device's latest sample (404 before its first)."""
    return await telemetry.latest(identity.tenant, device_id)


# Rendered without validating thousands of points again: `RangeOut` documents the shape.
@router.get("/devices/{device_id}/telemetry", response_model=RangeOut)
async def get_telemetry(
    device_id: str,
    identity: UserIdentity,
    telemetry: TelemetryAppDep,
    metric: Annotated[list[str] | None, Query()] = None,
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    bucket: Annotated[int | None, Query()] = None,
) -> JSONResponse:
    """Metrics over a range (default: the last hour), as min/avg/max per bucket."""
    found = await telemetry.series(
        identity.tenant, device_id, metrics=metric or [], start=start, end=end, bucket=bucket
    )
    return JSONResponse(
        {
            "from": _rfc3339(found.start),
            "to": _rfc3339(found.end),
            "bucket": found.bucket,
            "series": found.series,
        }
    )


@router.get(
    "/devices/{device_id}/telemetry/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {_EVENT_STREAM: {}}}},
)
async def stream_telemetry(
    device_id: str,
    identity: UserIdentity,
    telemetry: TelemetryAppDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """The device's new samples as server-sent events (`event: sample`, `id` its sequence)."""
    after = None
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise InvalidRequest(f"Last-Event-ID: {last_event_id!r} is not a sample sequence")
        after = int(last_event_id)
    samples = telemetry.follow(
        identity.tenant, device_id, after=after, idle=settings.stream_keepalive
    )

    async def events() -> AsyncIterator[str]:
        # Reconnecting clients wait 1 s before they ask again.
        yield "retry: 1000\n\n"
        async for item in samples:
            if item is None:
                yield ": keep-alive\n\n"
            else:
                data = json.dumps(item.sample, separators=(",", ":"))
                yield f"event: sample\nid: {item.seq}\ndata: {data}\n\n"

    return StreamingResponse(
        events(),
        media_type=_EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/telemetry/thresholds")
async def get_thresholds(
    identity: UserIdentity, telemetry: TelemetryAppDep
) -> dict[str, Threshold]:
    """The tenant's thresholds by metric (`family/name`, or `family/*` for a whole family)."""
    return await telemetry.thresholds(identity.tenant)


@router.put("/telemetry/thresholds", status_code=204)
async def set_thresholds(
    identity: UserIdentity, telemetry: TelemetryAppDep, body: JsonBody
) -> Response:
    """Replace the tenant's thresholds; a reading beyond one raises a CRITICAL alert."""
    await telemetry.set_thresholds(identity.tenant, body)
    return Response(status_code=204)
