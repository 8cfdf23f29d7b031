"""The filters of the listing and the export, read from their query-string values.

Dates are Unix timestamps in seconds, as the web UI sends them: `created_after` is the first
second included, `created_before` the last one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from common.core.errors import BadRequest
from services.auditlogs.models import OBJECT_TYPES, LogFilter

__all__ = ["parse_filter", "parse_limit"]

_SORTS: Final = {"asc": True, "desc": False}
# The most rows one export may be asked for (the database counts them in 64 bits; the web
# UI asks for 20,000).
MAX_EXPORT_LIMIT: Final = 10_000_000
_SECOND: Final = timedelta(seconds=1)


def _given(value: str | None) -> str | None:
    return value if value else None


def _instant(name: str, raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        seconds = int(raw)
    except ValueError:
        raise BadRequest(f'invalid {name}: "{raw}" is not a Unix timestamp in seconds') from None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f'invalid {name}: "{raw}" is out of range') from None


def parse_filter(
    *,
    actor_id: str | None = None,
    actor_email: str | None = None,
    object_id: str | None = None,
    object_type: str | None = None,
    object_deployment_name: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    sort: str | None = None,
) -> LogFilter:
    """Validate the filter parameters; 400 with what is wrong."""
    if object_type and object_type not in OBJECT_TYPES:
        raise BadRequest(
            f'invalid object_type: "{object_type}"; must be one of {", ".join(OBJECT_TYPES)}'
        )
    if sort and sort not in _SORTS:
        raise BadRequest(f'invalid sort: "{sort}"; must be asc or desc')
    since = _instant("created_after", created_after)
    last = _instant("created_before", created_before)
    if since is not None and last is not None and since > last:
        raise BadRequest("created_after must not be later than created_before")
    return LogFilter(
        actor_id=_given(actor_id),
        actor_email=_given(actor_email),
        object_id=_given(object_id),
        object_type=_given(object_type),
        object_deployment_name=_given(object_deployment_name),
        since=since,
        # The whole last second is included: events before the next one. (A strict bound
        # also keeps clear of the embedded server, which mis-handles `$lte` on some indexed
        # date queries.)
        until=last + _SECOND if last is not None else None,
        ascending=_SORTS[sort] if sort else False,
    )


def parse_limit(raw: str | None) -> int | None:
    """The most events an export holds (None: all that match); 400 unless a positive number."""
    if not raw:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f'invalid limit: "{raw}" is not a number') from None
    if limit < 1:
        raise BadRequest("invalid limit: must be at least 1")
    if limit > MAX_EXPORT_LIMIT:
        raise BadRequest(f"invalid limit: must be at most {MAX_EXPORT_LIMIT}")
    return limit
