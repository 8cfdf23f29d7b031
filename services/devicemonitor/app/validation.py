"""Reading what a device sends: JSON values checked into domain values, with precise errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.devicemonitor.app.errors import InvalidRequest, OtherDevice

__all__ = ["batch", "check_device", "check_not_future", "parse"]

_M = TypeVar("_M", bound=BaseModel)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse(model: type[_M], value: Any, what: str) -> _M:
    """`value` checked into a `model`, or `InvalidRequest` naming `what` and the field."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InvalidRequest(f"{what}: {_describe(exc)}") from None


def batch(body: Any, what: str, *, limit: int) -> Sequence[Any]:
    """The items of a body that is one object or an array of them, at most `limit`."""
    items = [body] if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise InvalidRequest(f"the body must be {what} or an array of them")
    if not items:
        raise InvalidRequest(f"the array holds no {what}")
    if len(items) > limit:
        raise InvalidRequest(f"at most {limit} {what} per request, this one has {len(items)}")
    return items


def check_device(claimed: str | None, device_id: str) -> None:
    """A device reports only for itself: a `device_id` it names must be its own (403)."""
    if claimed is not None and claimed != device_id:
        raise OtherDevice(claimed)


def check_not_future(
    when: datetime, what: str, *, now: Callable[[], datetime], skew: timedelta
) -> None:
    """Refuse a time further ahead of the server's clock than a device's clock may drift."""
    limit = now() + skew
    if when > limit:
        raise InvalidRequest(
            f"{what}: {when.isoformat()} is in the future (the server's time is "
            f"{now().isoformat()}; at most {int(skew.total_seconds())} s ahead is accepted)"
        )
