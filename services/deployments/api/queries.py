"""Parsing of the list endpoints' query strings into store filters (400 on bad values)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

from starlette.datastructures import QueryParams

from common.core.errors import BadRequest
from services.deployments.store import ArtifactFilter, DeploymentFilter, ReleaseFilter, TextMatch

__all__ = [
    "artifact_filter_v1",
    "artifact_filter_v2",
    "artifact_sort",
    "deployment_filter",
    "release_filter",
    "release_sort",
]

_DeploymentStatus = Literal["pending", "inprogress", "finished", "aborted"]
_DeploymentType = Literal["software", "configuration"]
_DEPLOYMENT_STATUSES: Final[dict[str, _DeploymentStatus]] = {
    "pending": "pending",
    "inprogress": "inprogress",
    "finished": "finished",
    "aborted": "aborted",
}
_DEPLOYMENT_TYPES: Final[dict[str, _DeploymentType]] = {
    "software": "software",
    "configuration": "configuration",
}
_RELEASE_SORT_FIELDS: Final = ("name", "modified", "artifacts_count", "tags")
_MAX_NAMES: Final = 100
_MAX_TEXT: Final = 4096


def _epoch(raw: str, name: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(raw), UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(
            f"timestamp parsing failed for {name} parameter: invalid timestamp: {raw}"
        ) from None


def deployment_filter(query: QueryParams, *, v2: bool) -> DeploymentFilter:
    """Filters of `GET /deployments` (v1: `search`; v2: repeated `id` and `name`)."""
    raw_status = query.get("status") or None
    status = _DEPLOYMENT_STATUSES.get(raw_status) if raw_status else None
    if raw_status and status is None:
        raise BadRequest(f"unknown status {raw_status}")
    raw_type = query.get("type") or None
    type_ = _DEPLOYMENT_TYPES.get(raw_type) if raw_type else None
    if raw_type and type_ is None:
        raise BadRequest(f"unknown deployment type {raw_type}")
    sort = (query.get("sort") or "desc").lower()
    if sort not in ("asc", "desc"):
        raise BadRequest('invalid form value: must be one of "asc" or "desc"')
    before = query.get("created_before")
    after = query.get("created_after")
    search = "" if v2 else (query.get("search") or "")
    if len(search) > _MAX_TEXT:
        raise BadRequest("search: the length must be no more than 4096")
    names = query.getlist("name") if v2 else []
    ids = query.getlist("id") if v2 else []
    if len(names) > _MAX_NAMES or len(ids) > _MAX_NAMES:
        raise BadRequest(f"at most {_MAX_NAMES} id and name values are allowed")
    return DeploymentFilter(
        status=status,
        type=type_,
        search=search,
        names=names,
        ids=ids,
        created_before=_epoch(before, "created_before") if before else None,
        created_after=_epoch(after, "created_after") if after else None,
        ascending=sort == "asc",
    )


def _contains(value: str | None) -> TextMatch | None:
    return TextMatch(value, "contains") if value else None


def artifact_filter_v1(query: QueryParams) -> ArtifactFilter:
    """v1 artifact filters: case-insensitive substrings of name, description, device type."""
    name = query.get("name")
    return ArtifactFilter(
        names=[TextMatch(name, "contains")] if name else [],
        description=_contains(query.get("description")),
        device_type=_contains(query.get("device_type")),
    )


def _exact_or_prefix(value: str) -> TextMatch:
    if value.endswith("*"):
        return TextMatch(value[:-1], "prefix")
    return TextMatch(value, "exact")


def artifact_filter_v2(query: QueryParams) -> ArtifactFilter:
    """v2 artifact filters: exact values, or a prefix when a value ends with `*`."""
    names = [_exact_or_prefix(n) for n in query.getlist("name") if n]
    prefixes = [n for n in names if n.kind == "prefix"]
    if prefixes and len(names) > 1:
        if len(prefixes) == len(names):
            raise BadRequest("only one name prefix may be given")
        raise BadRequest("cannot filter by both exact names and name prefix")
    if len(names) > _MAX_NAMES:
        raise BadRequest(f"at most {_MAX_NAMES} names may be given")
    description = query.get("description")
    device_type = query.get("device_type")
    return ArtifactFilter(
        names=names,
        description=_exact_or_prefix(description) if description else None,
        device_type=_exact_or_prefix(device_type) if device_type else None,
    )


def artifact_sort(query: QueryParams) -> tuple[str, bool]:
    """`sort=name:asc|name:desc|modified:asc|modified:desc` (default name ascending)."""
    raw = query.get("sort") or "name:asc"
    field, _, direction = raw.partition(":")
    if field not in ("name", "modified") or direction not in ("asc", "desc"):
        raise BadRequest(f"invalid sort parameter {raw!r}")
    return field, direction == "asc"


def release_filter(query: QueryParams, *, v2: bool) -> ReleaseFilter:
    """Release filters (v1: description and device type too; v2: tags)."""
    name = query.get("name")
    description = query.get("description") if not v2 else None
    return ReleaseFilter(
        names=[TextMatch(name, "contains")] if name else [],
        description=_contains(description),
        device_type=(query.get("device_type") or None) if not v2 else None,
        update_type=query.get("update_type") or None,
        tags=[t.lower() for t in query.getlist("tag") if t] if v2 else [],
    )


def release_sort(query: QueryParams, *, default: str = "name:asc") -> tuple[str, bool]:
    """`sort=<name|modified|artifacts_count|tags>:<asc|desc>`."""
    raw = query.get("sort") or default
    field, _, direction = raw.partition(":")
    if field not in _RELEASE_SORT_FIELDS or direction not in ("asc", "desc"):
        raise BadRequest(f"invalid sort parameter {raw!r}")
    return field, direction == "asc"
