"""Domain models of the inventory: devices, scoped attributes, queries and results."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, field_validator

__all__ = [
    "DEFAULT_SCOPE",
    "MAX_ARRAY_ITEMS",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_STRING_LENGTH",
    "OPERATORS",
    "SCOPES",
    "Attribute",
    "AttributeRef",
    "Device",
    "DeviceChange",
    "DeviceQuery",
    "FilterAttribute",
    "FilterParams",
    "IdentitySearchParams",
    "NewAttribute",
    "Operator",
    "Predicate",
    "Regex",
    "Scope",
    "SearchParams",
    "SelectParams",
    "SortKey",
    "SortParams",
    "StatusStatistics",
    "TierCounts",
    "UpdateResult",
    "WriteOutcome",
    "check_name",
    "normalize_value",
    "text_tokens",
]

Scope = Literal["identity", "inventory", "system", "tags", "monitor"]
SCOPES: Final[tuple[str, ...]] = get_args(Scope)
DEFAULT_SCOPE: Final = "inventory"

# `$ltne` (the web UI's offline and issue filters): less than the value, or no such attribute.
Operator = Literal[
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$ltne", "$in", "$nin", "$exists", "$regex"
]
OPERATORS: Final[tuple[str, ...]] = get_args(Operator)

# Limits on what a device or a peer may store. Mender bounds names to 1-1024 characters;
# values are bounded here so one device cannot bloat its document (the JSON body limit
# caps a request at 1 MiB as well).
MAX_NAME_LENGTH: Final = 1024
MAX_STRING_LENGTH: Final = 4096
MAX_ARRAY_ITEMS: Final = 256
MAX_DESCRIPTION_LENGTH: Final = 1024

_VALUE_TYPES_MESSAGE: Final = "supported types are string, number, and arrays thereof"

# Attribute values as stored: what devices send (strings, numbers, homogeneous arrays), plus
# what the server itself writes (timestamps, the monitor scope's booleans).
AttributeValue = str | float | bool | datetime | list[str] | list[float] | None


# Free-text keywords are ASCII letter/digit runs, lower-cased. The store keeps those of each
# device's attributes with this same function, and the group changes of many devices compute
# the same tokens inside the database (`$regexFindAll` with `[a-z0-9]+` after `$toLower`,
# both ASCII on MongoDB and on the embedded server), so queries and stored keywords agree.
_TOKEN: Final = re.compile(r"[A-Za-z0-9]+")


def text_tokens(text: str) -> list[str]:
    """Split text into the lower-cased keywords used by free-text search (deduplicated)."""
    return list(dict.fromkeys(t.lower() for t in _TOKEN.findall(text)))


def check_name(name: str, what: str = "name") -> str:
    """Validate an attribute name (1-1024 characters, no NUL); return it."""
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValueError(f"{what} must be between 1 and {MAX_NAME_LENGTH} characters long")
    if "\x00" in name:
        raise ValueError(f"{what} must not contain NUL characters")
    return name


def _number(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("numbers must be finite")
    return float(value)


def _string(value: str) -> str:
    if len(value) > MAX_STRING_LENGTH:
        raise ValueError(f"string values are limited to {MAX_STRING_LENGTH} characters")
    return value


def normalize_value(value: Any) -> str | float | list[str] | list[float]:
    """Check a device-supplied value (string, number, homogeneous array); numbers become floats."""
    if isinstance(value, bool) or value is None:
        raise ValueError(_VALUE_TYPES_MESSAGE)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, list):
        if len(value) > MAX_ARRAY_ITEMS:
            raise ValueError(f"arrays are limited to {MAX_ARRAY_ITEMS} items")
        if all(isinstance(v, str) for v in value):
            return [_string(v) for v in value]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return [_number(v) for v in value]
        raise ValueError("array values must be of consistent type: string or number")
    raise ValueError(_VALUE_TYPES_MESSAGE)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Attribute(_Model):
    """One attribute of a device, within a scope."""

    name: str
    scope: str
    value: Any = None
    description: str | None = None
    timestamp: datetime | None = None


class Device(_Model):
    """A device's inventory document."""

    id: str
    attributes: tuple[Attribute, ...] = ()
    updated_ts: datetime | None = None
    revision: int = 0
    tags_etag: str | None = None

    @property
    def group(self) -> str | None:
        """The device's group (the `system` attribute `group`), if any."""
        for attr in self.attributes:
            if attr.scope == "system" and attr.name == "group" and isinstance(attr.value, str):
                return attr.value
        return None


class UpdateResult(_Model):
    """How many devices a bulk operation touched."""

    matched_count: int = 0
    created_count: int = 0
    updated_count: int = 0
    deleted_count: int = 0


class FilterAttribute(_Model):
    """An attribute present in the inventory and how many devices carry it."""

    name: str
    scope: str
    count: int


class TierCounts(_Model):
    """Number of devices per tier."""

    standard: int = 0
    micro: int = 0
    system: int = 0


class StatusStatistics(_Model):
    """Accepted and pending devices, per tier."""

    accepted: TierCounts = TierCounts()
    pending: TierCounts = TierCounts()


class WriteOutcome(Enum):
    """Result of a conditional write to one device."""

    OK = "ok"
    NOT_FOUND = "not_found"
    LIMIT_EXCEEDED = "limit_exceeded"
    PRECONDITION_FAILED = "precondition_failed"
    ETAG_MISMATCH = "etag_mismatch"


@dataclass(frozen=True, slots=True)
class AttributeRef:
    """A scoped attribute name; `identity/id` stands for the device id."""

    scope: str
    name: str

    @property
    def is_device_id(self) -> bool:
        """Whether this refers to the device id rather than a stored attribute."""
        return self.scope == "identity" and self.name == "id"


@dataclass(frozen=True, slots=True)
class Regex:
    """A regular expression with Mongo-style option letters."""

    pattern: str
    options: str = ""


@dataclass(frozen=True, slots=True)
class Predicate:
    """One condition on an attribute's value."""

    attribute: AttributeRef
    operator: Operator
    # `$ltne`: the bounds it compares with (the value, and the time a string also reads as).
    value: Any


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sort criterion."""

    attribute: AttributeRef
    ascending: bool


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """A device search: predicates joined with AND, free-text tokens, order, projection, page."""

    predicates: tuple[Predicate, ...] = ()
    text_tokens: tuple[str, ...] | None = None
    sort: tuple[SortKey, ...] = ()
    projection: tuple[AttributeRef, ...] | None = None
    skip: int = 0
    limit: int = 20


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """A write to one device's attributes, with the conditions it is subject to.

    `set` attributes are written whole; existing attributes of the `replace_scopes` that are
    not in `set` are removed, as are `remove`; `limits` caps the number of attributes per
    scope after the write. `create` makes the write an upsert.
    """

    now: datetime
    set: tuple[Attribute, ...] = ()
    replace_scopes: frozenset[str] = frozenset()
    remove: tuple[AttributeRef, ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    touch_updated: bool = False
    create: bool = True
    if_unmodified_since: datetime | None = None
    if_tags_etag: str | None = None
    new_tags_etag: str | None = None
    # The digest of a device's whole report when the write replaces its inventory scope with
    # it; a write that changes the inventory scope otherwise forgets the stored digest.
    report_digest: str | None = None
    # With `report_digest`: no write at all while the stored digest is the same and the
    # device's `updated_ts` is later than this (an unchanged report refreshes it only then).
    skip_if_updated_after: datetime | None = None

    @property
    def touches_inventory(self) -> bool:
        """Whether the write can change the device-reported (inventory scope) attributes."""
        return (
            DEFAULT_SCOPE in self.replace_scopes
            or any(a.scope == DEFAULT_SCOPE for a in self.set)
            or any(r.scope == DEFAULT_SCOPE for r in self.remove)
        )


class _Input(BaseModel):
    # Request documents: strict JSON types, unknown fields ignored (as Mender's decoder does).
    model_config = ConfigDict(frozen=True, extra="ignore")


class NewAttribute(_Input):
    """An attribute as a device or a peer sends it; `scope` defaults per endpoint."""

    name: StrictStr
    value: Any
    description: StrictStr | None = None
    scope: StrictStr | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_name(name)

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any) -> Any:
        return normalize_value(value)

    @field_validator("description")
    @classmethod
    def _description(cls, description: str | None) -> str | None:
        if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
            raise ValueError(f"descriptions are limited to {MAX_DESCRIPTION_LENGTH} characters")
        return description


class FilterParams(_Input):
    """One filter predicate of a search."""

    scope: StrictStr
    attribute: StrictStr
    type: StrictStr
    value: Any


class SortParams(_Input):
    """One sort criterion of a search."""

    scope: StrictStr
    attribute: StrictStr
    order: StrictStr


class SelectParams(_Input):
    """An attribute to return from a search."""

    scope: StrictStr
    attribute: StrictStr


class SearchParams(_Input):
    """The body of a device search."""

    page: StrictInt | None = None
    per_page: StrictInt | None = None
    filters: list[FilterParams] | None = None
    sort: list[SortParams] | None = None
    attributes: list[SelectParams] | None = None
    device_ids: list[StrictStr] | None = None
    text: StrictStr | None = None


class IdentitySearchParams(_Input):
    """The body of a search by identity-value prefix."""

    scope: StrictStr
    name: StrictStr
    value_prefix: StrictStr
    attributes: list[SelectParams] | None = None
    page: StrictInt | None = None
    per_page: StrictInt | None = None
