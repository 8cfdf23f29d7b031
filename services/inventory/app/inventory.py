"""The inventory's use-cases: device and peer writes, tags, groups, searches, statistics."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

from common.core.errors import BadRequest, ServiceUnavailable
from common.core.pages import Page
from services.inventory.app.errors import (
    DeviceNotFound,
    ETagMismatch,
    GroupNotFound,
    ModifiedSince,
    TooManyAttributes,
)
from services.inventory.app.queries import (
    GROUP,
    identity_search_query,
    list_query,
    parse_group_name,
    search_query,
)
from services.inventory.clients.devicemonitor import DevicemonitorClient
from services.inventory.models import (
    DEFAULT_SCOPE,
    SCOPES,
    Attribute,
    Device,
    DeviceChange,
    FilterAttribute,
    IdentitySearchParams,
    NewAttribute,
    SearchParams,
    StatusStatistics,
    UpdateResult,
    WriteOutcome,
    check_name,
)
from services.inventory.store import DataStore

__all__ = ["DEVICE_STATUSES", "InventoryApp"]

# Statuses deviceauth reports; `decommissioned` removes the devices.
DEVICE_STATUSES: Final = frozenset(
    {"accepted", "pending", "preauthorized", "rejected", "noauth", "decommissioned"}
)
_FILTER_ATTRIBUTES_SAMPLE: Final = 5000
_FILTER_ATTRIBUTES_LIMIT: Final = 500
_CHECK_IN_TIME: Final = ("system", "check_in_time")


def _now() -> datetime:
    return datetime.now(UTC)


def _last_wins(attributes: Iterable[Attribute]) -> tuple[Attribute, ...]:
    # A name repeated in one request keeps its last value, as Mender's update does.
    return tuple({(a.scope, a.name): a for a in attributes}.values())


def _report_digest(attributes: Iterable[Attribute]) -> str:
    """A digest of a device's report, independent of the order of its attributes."""
    canonical = sorted(
        json.dumps([a.name, a.value, a.description], sort_keys=True, default=str)
        for a in attributes
    )
    return hashlib.blake2b("\n".join(canonical).encode(), digest_size=16).hexdigest()


def _parse_check_in_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise BadRequest("system/check_in_time must be an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"system/check_in_time: {value!r} is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise BadRequest("system/check_in_time must carry a time zone offset")
    return parsed.astimezone(UTC)


def _parse_unmodified_since(header: str | None) -> datetime | None:
    if header is None:
        return None
    try:
        parsed = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        raise BadRequest(f"invalid header If-Unmodified-Since: {header!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _etag_from_if_match(header: str | None) -> str | None:
    if header is None:
        return None
    etag = header.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    etag = etag.strip('"')
    # `*` (or an empty header) matches any current state: no condition.
    return None if etag in ("", "*") else etag


def _check_device_id(device_id: str) -> str:
    try:
        return check_name(device_id, "device id")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


class InventoryApp:
    """The inventory service's business rules, over a `DataStore`."""

    def __init__(
        self,
        store: DataStore,
        *,
        limit_attributes: int,
        limit_tags: int,
        report_refresh: timedelta = timedelta(hours=1),
        devicemonitor: DevicemonitorClient | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._limit_attributes = limit_attributes
        self._limit_tags = limit_tags
        self._report_refresh = report_refresh
        self._devicemonitor = devicemonitor
        self._clock = clock

    # --- writes ---

    def _limits(self, scopes: Iterable[str]) -> dict[str, int]:
        limits = {}
        for scope in scopes:
            limit = self._limit_tags if scope == "tags" else self._limit_attributes
            if limit > 0:
                limits[scope] = limit
        return limits

    async def _write(self, tenant_id: str, device_id: str, change: DeviceChange) -> None:
        outcome = await self._store.write_device(tenant_id, device_id, change)
        if outcome is WriteOutcome.OK:
            return
        if outcome is WriteOutcome.LIMIT_EXCEEDED:
            raise TooManyAttributes()
        if outcome is WriteOutcome.ETAG_MISMATCH:
            raise ETagMismatch()
        if outcome is WriteOutcome.PRECONDITION_FAILED:
            raise ModifiedSince()
        raise DeviceNotFound()

    async def update_device_attributes(
        self,
        tenant_id: str,
        device_id: str,
        *,
        attributes: Sequence[NewAttribute],
        replace: bool,
    ) -> None:
        """Store what a device reports: merge into, or replace, its inventory scope."""
        now = self._clock()
        # A device writes its own inventory scope only, whatever scope it claims.
        attrs = _last_wins(
            Attribute(name=a.name, scope=DEFAULT_SCOPE, value=a.value, description=a.description)
            for a in attributes
        )
        change = DeviceChange(
            now=now,
            set=attrs,
            replace_scopes=frozenset({DEFAULT_SCOPE}) if replace else frozenset(),
            limits=self._limits([DEFAULT_SCOPE]),
            touch_updated=True,
            # A whole report that is the stored one writes nothing, but for refreshing
            # `updated_ts` once per `report_refresh`.
            report_digest=_report_digest(attrs) if replace else None,
            skip_if_updated_after=now - self._report_refresh if replace else None,
        )
        await self._write(tenant_id, device_id, change)

    async def update_tags(
        self,
        tenant_id: str,
        device_id: str,
        *,
        tags: Sequence[NewAttribute],
        replace: bool,
        if_match: str | None,
    ) -> None:
        """Merge or replace a device's tags, if `If-Match` names its current tags ETag."""
        now = self._clock()
        attrs = _last_wins(
            Attribute(
                name=t.name, scope="tags", value=t.value, description=t.description, timestamp=now
            )
            for t in tags
        )
        change = DeviceChange(
            now=now,
            set=attrs,
            replace_scopes=frozenset({"tags"}) if replace else frozenset(),
            limits=self._limits(["tags"]),
            create=False,
            if_tags_etag=_etag_from_if_match(if_match),
            new_tags_etag=str(uuid.uuid4()),
        )
        await self._write(tenant_id, device_id, change)

    async def clear_inventory(self, tenant_id: str, device_id: str) -> None:
        """Remove the device-reported (inventory scope) attributes of a device."""
        # NOTE: Mender's management DELETE /devices/{id} clears only the inventory scope and
        # answers 204 whether or not the device exists; the device itself stays.
        change = DeviceChange(
            now=self._clock(),
            replace_scopes=frozenset({DEFAULT_SCOPE}),
            touch_updated=True,
            create=False,
        )
        await self._store.write_device(tenant_id, device_id, change)

    def _peer_attributes(
        self, attributes: Sequence[NewAttribute], scope: str | None
    ) -> tuple[Attribute, ...]:
        attrs = []
        for a in attributes:
            attr_scope = scope or a.scope or DEFAULT_SCOPE
            if attr_scope not in SCOPES:
                raise BadRequest(
                    f"invalid scope {attr_scope!r}: must be one of {', '.join(SCOPES)}"
                )
            value = a.value
            if (attr_scope, a.name) == _CHECK_IN_TIME:
                value = _parse_check_in_time(value)
            attrs.append(
                Attribute(name=a.name, scope=attr_scope, value=value, description=a.description)
            )
        return _last_wins(attrs)

    async def update_attributes(
        self,
        tenant_id: str,
        device_id: str,
        *,
        attributes: Sequence[NewAttribute],
        scope: str | None = None,
        if_unmodified_since: str | None = None,
    ) -> None:
        """Merge attributes written by a peer (in `scope`, or each its own); create the device."""
        _check_device_id(device_id)
        attrs = self._peer_attributes(attributes, scope)
        change = DeviceChange(
            now=self._clock(),
            set=attrs,
            limits=self._limits({a.scope for a in attrs}),
            if_unmodified_since=_parse_unmodified_since(if_unmodified_since),
        )
        await self._write(tenant_id, device_id, change)

    async def create_device(
        self, tenant_id: str, device_id: str, *, attributes: Sequence[NewAttribute]
    ) -> None:
        """Create a device with attributes, or merge them into the existing one."""
        await self.update_attributes(tenant_id, device_id, attributes=attributes)

    async def delete_device(self, tenant_id: str, device_id: str) -> None:
        """Remove a device from the inventory."""
        if not await self._store.delete_devices(tenant_id, [device_id]):
            raise DeviceNotFound()

    async def update_statuses(
        self,
        tenant_id: str,
        status: str,
        devices: Sequence[tuple[str, int]],
        *,
        check_ins: Mapping[str, str] | None = None,
    ) -> UpdateResult:
        """Record deviceauth's status of devices, newest revision wins; drop decommissioned.

        `check_ins` are the RFC 3339 check-in times that came with some of them: each is
        recorded where it is later than the device's stored one, whatever the revision."""
        if status not in DEVICE_STATUSES:
            known = ", ".join(sorted(DEVICE_STATUSES))
            raise BadRequest(f"unrecognized status {status!r}: must be one of {known}")
        for device_id, _ in devices:
            _check_device_id(device_id)
        if status == "decommissioned":
            deleted = await self._store.delete_devices(tenant_id, [d for d, _ in devices])
            return UpdateResult(deleted_count=deleted)
        parsed = {d: _parse_check_in_time(t) for d, t in (check_ins or {}).items()}
        return await self._store.set_statuses(
            tenant_id, status=status, devices=devices, now=self._clock(), check_ins=parsed
        )

    async def reindex(self, tenant_id: str, device_id: str, *, service: str | None) -> None:
        """Refresh the monitor-scope attributes of a device from devicemonitor."""
        if service != "devicemonitor":
            raise BadRequest("unsupported service")
        _check_device_id(device_id)
        if self._devicemonitor is None:
            raise ServiceUnavailable("devicemonitor is not configured")
        alerts = await self._devicemonitor.count_latest_alerts(tenant_id, device_id)
        change = DeviceChange(
            now=self._clock(),
            set=(
                Attribute(name="alert_count", scope="monitor", value=float(alerts)),
                Attribute(name="alerts", scope="monitor", value=alerts > 0),
            ),
        )
        await self._write(tenant_id, device_id, change)

    async def create_tenant(self, tenant_id: str) -> None:
        """Prepare the inventory of a new tenant (idempotent)."""
        if not tenant_id:
            raise BadRequest("tenant_id: cannot be blank")
        await self._store.add_tenant(tenant_id, now=self._clock())

    # --- reads ---

    async def get_device(self, tenant_id: str, device_id: str) -> Device:
        """Return a device's inventory."""
        device = await self._store.get_device(tenant_id, device_id)
        if device is None:
            raise DeviceNotFound()
        return device

    async def list_devices(
        self, tenant_id: str, *, params: Sequence[tuple[str, str]], page: Page
    ) -> tuple[list[Device], int]:
        """List devices with v1 query-string filters and sort; return a page and the total."""
        return await self._store.search(tenant_id, list_query(params, page))

    async def search_devices(
        self, tenant_id: str, params: SearchParams | None
    ) -> tuple[list[Device], int, Page]:
        """Search devices (v2 filters, sort, projection, ids, text); a page, total, paging."""
        query, page = search_query(params or SearchParams())
        devices, total = await self._store.search(tenant_id, query)
        return devices, total, page

    async def search_identities(
        self, tenant_id: str, params: IdentitySearchParams
    ) -> tuple[list[Device], int, Page]:
        """Find devices whose identity (or tag) value starts with a prefix."""
        query, page = identity_search_query(params)
        devices, total = await self._store.search(tenant_id, query)
        return devices, total, page

    async def filter_attributes(self, tenant_id: str) -> list[FilterAttribute]:
        """The attributes devices carry, most common first (from a sample of devices)."""
        return await self._store.filter_attributes(
            tenant_id, sample=_FILTER_ATTRIBUTES_SAMPLE, limit=_FILTER_ATTRIBUTES_LIMIT
        )

    async def statistics(self, tenant_id: str) -> StatusStatistics:
        """Accepted and pending devices per tier."""
        return await self._store.status_statistics(tenant_id)

    # --- groups ---

    async def get_device_group(self, tenant_id: str, device_id: str) -> str | None:
        """Return the group of a device (None when it has none)."""
        return (await self.get_device(tenant_id, device_id)).group

    async def assign_group(self, tenant_id: str, device_id: str, group: str) -> None:
        """Move a device into a group."""
        change = DeviceChange(
            now=self._clock(),
            set=(Attribute(name=GROUP.name, scope=GROUP.scope, value=parse_group_name(group)),),
            create=False,
        )
        await self._write(tenant_id, device_id, change)

    async def clear_group(self, tenant_id: str, device_id: str, group: str) -> None:
        """Take a device out of the named group (404 unless it is in it)."""
        result = await self._store.unset_group(tenant_id, group=group, device_ids=[device_id])
        if result.matched_count == 0:
            raise DeviceNotFound()

    async def list_groups(self, tenant_id: str, *, status: str | None = None) -> list[str]:
        """Names of the groups in use (among devices with `status`, when given)."""
        return await self._store.list_groups(tenant_id, status=status or None)

    async def list_group_devices(
        self, tenant_id: str, group: str, *, page: Page
    ) -> tuple[list[str], int]:
        """One page of the ids of a group's devices, and the group's size."""
        ids, total = await self._store.list_group_devices(
            tenant_id, group=group, skip=page.skip, limit=page.per_page
        )
        if total == 0:
            raise GroupNotFound()
        return ids, total

    async def add_devices_to_group(
        self, tenant_id: str, group: str, device_ids: Sequence[str]
    ) -> UpdateResult:
        """Move existing devices into a group."""
        parse_group_name(group)
        if not device_ids:
            raise BadRequest("no device IDs present in payload")
        return await self._store.set_group(tenant_id, device_ids=device_ids, group=group)

    async def remove_devices_from_group(
        self, tenant_id: str, group: str, device_ids: Sequence[str]
    ) -> UpdateResult:
        """Take the listed devices out of a group."""
        parse_group_name(group)
        if not device_ids:
            raise BadRequest("no device IDs present in payload")
        return await self._store.unset_group(tenant_id, group=group, device_ids=device_ids)

    async def delete_group(self, tenant_id: str, group: str) -> UpdateResult:
        """Take every device out of a group."""
        parse_group_name(group)
        return await self._store.unset_group(tenant_id, group=group)

    async def device_groups(self, tenant_id: str, device_id: str) -> list[str]:
        """The groups of a device (zero or one), for peers."""
        group = await self.get_device_group(tenant_id, device_id)
        return [group] if group else []
