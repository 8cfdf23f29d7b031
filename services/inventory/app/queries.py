"""Turning list parameters (v1 query strings, v2 search bodies) into device queries."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast

from common.core.errors import BadRequest
from common.core.pages import DEFAULT_PER_PAGE, Page
from services.inventory.models import (
    DEFAULT_SCOPE,
    MAX_STRING_LENGTH,
    OPERATORS,
    SCOPES,
    AttributeRef,
    DeviceQuery,
    FilterParams,
    IdentitySearchParams,
    Operator,
    Predicate,
    Regex,
    SearchParams,
    SelectParams,
    SortKey,
    SortParams,
    check_name,
    text_tokens,
)

__all__ = [
    "GROUP",
    "identity_search_query",
    "list_query",
    "parse_group_name",
    "search_page",
    "search_query",
]

GROUP: Final = AttributeRef("system", "group")
_STATUS: Final = AttributeRef("identity", "status")
_DEVICE_ID: Final = AttributeRef("identity", "id")

# v1 query keys that are not attribute filters.
_V1_RESERVED: Final = frozenset({"page", "per_page", "sort", "has_group", "group"})
_GROUP_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
_DECIMAL: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_V1_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_GO_BOOLS: Final = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_REGEX_FLAGS: Final = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_SCOPE_LIST: Final = ", ".join(SCOPES)


def parse_group_name(name: str) -> str:
    """Validate a group name: 1-256 letters, digits, `-` or `_`."""
    if not _GROUP_NAME.fullmatch(name):
        raise BadRequest(
            "invalid group name: 1-256 characters: letters, digits, - (dash) and _ (underscore)"
        )
    return name


def _scope(scope: str, what: str) -> str:
    if scope not in SCOPES:
        raise BadRequest(f"invalid {what} scope {scope!r}: must be one of {_SCOPE_LIST}")
    return scope


def _ref(scope: str, attribute: str, what: str) -> AttributeRef:
    try:
        name = check_name(attribute, f"{what} attribute")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return AttributeRef(_scope(scope, what), name)


def _split_scope(key: str) -> tuple[str, str]:
    scope, sep, name = key.partition("/")
    return (scope, name) if sep else (DEFAULT_SCOPE, key)


# --- v1: GET /devices?[scope/]attr=[eq:]value&sort=…&has_group=…&group=… ---


def _v1_sort(raw: str) -> tuple[SortKey, ...]:
    keys = []
    for part in raw.split(","):
        name, sep, order = part.partition(":")
        if sep and order not in ("asc", "desc"):
            raise BadRequest(f"invalid sort order {order!r}: must be asc or desc")
        scope, attribute = _split_scope(name)
        # Without an order Mender sorts descending.
        keys.append(SortKey(_ref(scope, attribute, "sort"), ascending=order == "asc"))
    return tuple(keys)


def _v1_values(raw: str) -> list[Any]:
    op, sep, rest = raw.partition(":")
    value = rest if sep and op == "eq" else raw
    # NOTE: like Mender, a value that reads as a number or as a UTC timestamp also matches
    # attributes stored as that number or time.
    values: list[Any] = [value]
    if _DECIMAL.fullmatch(value):
        values.append(float(value))
    try:
        values.append(datetime.strptime(value, _V1_TIME_FORMAT).replace(tzinfo=UTC))
    except ValueError:
        pass
    return values


def list_query(params: Sequence[tuple[str, str]], page: Page) -> DeviceQuery:
    """Build the query of the v1 device list from its query-string items."""
    first: dict[str, str] = {}
    for key, value in params:
        first.setdefault(key, value)
    predicates: list[Predicate] = []
    sort: tuple[SortKey, ...] = ()
    if first.get("sort"):
        sort = _v1_sort(first["sort"])
    if "has_group" in first:
        has_group = _GO_BOOLS.get(first["has_group"])
        if has_group is None:
            raise BadRequest(f'invalid has_group query: "{first["has_group"]}" is not a boolean')
        predicates.append(Predicate(GROUP, "$exists", has_group))
    if first.get("group"):
        predicates.append(Predicate(GROUP, "$eq", first["group"]))
    for key, raw in first.items():
        if key in _V1_RESERVED:
            continue
        scope, name = _split_scope(key)
        if scope not in SCOPES:
            # NOTE: Mender answers an unknown scope with an empty list, not an error.
            predicates.append(Predicate(_DEVICE_ID, "$in", []))
            continue
        ref = _ref(scope, name, "filter")
        values = _v1_values(raw)
        if len(values) == 1:
            predicates.append(Predicate(ref, "$eq", values[0]))
        else:
            predicates.append(Predicate(ref, "$in", values))
    return DeviceQuery(predicates=tuple(predicates), sort=sort, skip=page.skip, limit=page.per_page)


# --- v2: POST /filters/search ---


def _scalar(value: Any, what: str) -> Any:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    raise BadRequest(f"{what}: the value must be a string, a number or a boolean")


def _regex(value: Any) -> Regex:
    if not isinstance(value, str):
        raise BadRequest("$regex: the value must be a string")
    if len(value) > MAX_STRING_LENGTH:
        raise BadRequest(f"$regex: the expression is limited to {MAX_STRING_LENGTH} characters")
    pattern, options = value, ""
    # `/regex/flags` carries options; a value that merely contains slashes (a path) does not.
    delimited = re.fullmatch(r"/(.*)/([A-Za-z]*)", value, re.DOTALL)
    if delimited and set(delimited.group(2)) <= set(_REGEX_FLAGS):
        pattern, options = delimited.group(1), delimited.group(2)
    flags = 0
    for letter in options:
        flags |= _REGEX_FLAGS[letter]
    # The expression is anchored at the start of the value, as the API documents. (In
    # verbose mode a trailing `#` comment would swallow the closing parenthesis.)
    anchored = f"^(?:{pattern}\n)" if "x" in options else f"^(?:{pattern})"
    try:
        re.compile(anchored, flags)
    except re.error as exc:
        raise BadRequest(f"$regex: invalid regular expression: {exc}") from None
    return Regex(anchored, "".join(sorted(set(options))))


def _filter_value(operator: str, value: Any) -> Any:
    if value is None:
        raise BadRequest(f"{operator}: the filter value must not be null")
    if operator == "$exists":
        if not isinstance(value, bool):
            raise BadRequest("$exists: the value must be a boolean")
        return value
    if operator == "$regex":
        return _regex(value)
    if operator in ("$in", "$nin"):
        if not isinstance(value, list):
            raise BadRequest(f"{operator}: the value must be an array")
        return [_scalar(v, operator) for v in value]
    if operator in ("$eq", "$ne") and isinstance(value, list):
        return [_scalar(v, operator) for v in value]
    if operator in ("$gt", "$gte", "$lt", "$lte", "$ltne") and isinstance(value, bool):
        raise BadRequest(f"{operator}: the value must be a string or a number")
    if operator == "$ltne":
        return _ltne_bounds(_scalar(value, operator))
    return _scalar(value, operator)


def _ltne_bounds(value: Any) -> list[Any]:
    """What `$ltne` compares with: the value, and the time a string also reads as.

    The web UI finds offline devices with `system/check_in_time $ltne <RFC 3339 time>`; the
    server stores that attribute as a time, so the string is compared as one too.
    """
    bounds = [value]
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return bounds
        if when.tzinfo is not None:
            bounds.append(when.astimezone(UTC))
    return bounds


def _predicate(params: FilterParams) -> Predicate:
    ref = _ref(params.scope, params.attribute, "filter")
    if params.type not in OPERATORS:
        raise BadRequest(
            f"invalid filter type {params.type!r}: must be one of {', '.join(OPERATORS)}"
        )
    operator = cast(Operator, params.type)
    return Predicate(ref, operator, _filter_value(operator, params.value))


def _sort_key(params: SortParams) -> SortKey:
    if params.order not in ("asc", "desc"):
        raise BadRequest(f"invalid sort order {params.order!r}: must be asc or desc")
    return SortKey(_ref(params.scope, params.attribute, "sort"), params.order == "asc")


def _projection(selected: list[SelectParams] | None) -> tuple[AttributeRef, ...] | None:
    if not selected:
        return None
    return tuple(_ref(s.scope, s.attribute, "selected") for s in selected)


def search_page(page: int | None, per_page: int | None) -> Page:
    """Paging of a search body: absent or 0 means the default, as in Mender."""
    return Page(page=page or 1, per_page=per_page or DEFAULT_PER_PAGE, from_query=False)


def search_query(params: SearchParams) -> tuple[DeviceQuery, Page]:
    """Build the query of a v2 search body."""
    page = search_page(params.page, params.per_page)
    predicates = [_predicate(f) for f in params.filters or ()]
    if params.device_ids is not None:
        predicates.append(Predicate(_DEVICE_ID, "$in", list(params.device_ids)))
    tokens = tuple(text_tokens(params.text)) if params.text else None
    query = DeviceQuery(
        predicates=tuple(predicates),
        text_tokens=tokens,
        sort=tuple(_sort_key(s) for s in params.sort or ()),
        projection=_projection(params.attributes),
        skip=page.skip,
        limit=page.per_page,
    )
    return query, page


def identity_search_query(params: IdentitySearchParams) -> tuple[DeviceQuery, Page]:
    """Build the query of a search by identity-value prefix (v2alpha1)."""
    if params.scope not in ("identity", "tags"):
        raise BadRequest(f"invalid scope {params.scope!r}: must be identity or tags")
    page = search_page(params.page, params.per_page)
    ref = _ref(params.scope, params.name, "search")
    if len(params.value_prefix) > MAX_STRING_LENGTH:
        raise BadRequest(f"value_prefix is limited to {MAX_STRING_LENGTH} characters")
    prefix = Regex("^" + re.escape(params.value_prefix))
    query = DeviceQuery(
        predicates=(Predicate(ref, "$regex", prefix),),
        sort=(SortKey(_DEVICE_ID, ascending=True),),
        projection=_projection(params.attributes),
        skip=page.skip,
        limit=page.per_page,
    )
    return query, page
