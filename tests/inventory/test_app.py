"""Unit tests of the app layer with an in-memory store and devicemonitor."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from common.core.errors import BadGateway, BadRequest, ServiceUnavailable
from services.inventory.app import InventoryApp
from services.inventory.app.errors import (
    DeviceNotFound,
    ETagMismatch,
    ModifiedSince,
    TooManyAttributes,
)
from services.inventory.clients import HttpDevicemonitorClient
from services.inventory.models import (
    Attribute,
    Device,
    DeviceChange,
    NewAttribute,
    UpdateResult,
    WriteOutcome,
)

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


class FakeStore:
    """Records the changes the app asks for and answers with a preset outcome."""

    def __init__(self, outcome: WriteOutcome = WriteOutcome.OK) -> None:
        self.outcome = outcome
        self.changes: list[tuple[str, str, DeviceChange]] = []
        self.deleted: list[Sequence[str]] = []
        self.statuses: list[tuple[str, Sequence[tuple[str, int]], Mapping[str, datetime]]] = []
        self.devices: dict[str, Device] = {}

    async def write_device(
        self, tenant_id: str, device_id: str, change: DeviceChange
    ) -> WriteOutcome:
        self.changes.append((tenant_id, device_id, change))
        return self.outcome

    async def delete_devices(self, tenant_id: str, device_ids: Sequence[str]) -> int:
        self.deleted.append(device_ids)
        return len(device_ids)

    async def set_statuses(
        self,
        tenant_id: str,
        *,
        status: str,
        devices: Sequence[tuple[str, int]],
        now: datetime,
        check_ins: Mapping[str, datetime] | None = None,
    ) -> UpdateResult:
        self.statuses.append((status, devices, check_ins or {}))
        return UpdateResult(matched_count=len(devices))

    async def get_device(self, tenant_id: str, device_id: str) -> Device | None:
        return self.devices.get(device_id)


class FakeDevicemonitor:
    def __init__(self, alerts: int) -> None:
        self.alerts = alerts
        self.calls: list[tuple[str, str]] = []

    async def count_latest_alerts(self, tenant_id: str, device_id: str) -> int:
        self.calls.append((tenant_id, device_id))
        return self.alerts


def _app(store: FakeStore, devicemonitor: FakeDevicemonitor | None = None) -> InventoryApp:
    return InventoryApp(
        store,  # type: ignore[arg-type]
        limit_attributes=100,
        limit_tags=20,
        devicemonitor=devicemonitor,
        clock=lambda: NOW,
    )


def _new(name: str, value: Any, scope: str | None = None) -> NewAttribute:
    return NewAttribute(name=name, value=value, scope=scope)


class TestDeviceWrites:
    async def test_device_writes_its_inventory_scope(self) -> None:
        store = FakeStore()
        await _app(store).update_device_attributes(
            "t", "d1", attributes=[_new("a", "1", "identity"), _new("a", "2")], replace=True
        )
        ((tenant, device, change),) = store.changes
        assert (tenant, device) == ("t", "d1")
        assert change.set == (Attribute(name="a", scope="inventory", value="2"),)
        assert change.replace_scopes == {"inventory"}
        assert change.touch_updated
        assert change.create
        assert change.limits == {"inventory": 100}
        assert change.now == NOW

    async def test_a_whole_report_carries_its_digest(self) -> None:
        store = FakeStore()
        app = _app(store)
        report = [_new("os", "Linux"), _new("cpus", 4)]
        for attributes in (report, report[::-1], [_new("os", "Linux"), _new("cpus", 5)]):
            await app.update_device_attributes("t", "d1", attributes=attributes, replace=True)
        await app.update_device_attributes("t", "d1", attributes=report, replace=False)
        first, reordered, changed, merged = (change for _, _, change in store.changes)
        # The same attributes in any order are the same report; another value is another.
        assert first.report_digest is not None
        assert reordered.report_digest == first.report_digest
        assert changed.report_digest not in (None, first.report_digest)
        assert first.skip_if_updated_after == NOW - timedelta(hours=1)
        # A merge is no whole report: it has no digest, and the store forgets the stored one.
        assert (merged.report_digest, merged.skip_if_updated_after) == (None, None)
        assert merged.touches_inventory

    @pytest.mark.parametrize(
        ("outcome", "error"),
        [
            (WriteOutcome.LIMIT_EXCEEDED, TooManyAttributes),
            (WriteOutcome.ETAG_MISMATCH, ETagMismatch),
            (WriteOutcome.PRECONDITION_FAILED, ModifiedSince),
            (WriteOutcome.NOT_FOUND, DeviceNotFound),
        ],
    )
    async def test_outcomes_become_errors(
        self, outcome: WriteOutcome, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            await _app(FakeStore(outcome)).update_tags(
                "", "d1", tags=[_new("t", "v")], replace=False, if_match=None
            )

    @pytest.mark.parametrize(
        ("header", "etag"),
        [
            (None, None),
            ("abc", "abc"),
            ('"abc"', "abc"),
            ('W/"abc"', "abc"),
            ("*", None),
            ("", None),
        ],
    )
    async def test_if_match(self, header: str | None, etag: str | None) -> None:
        store = FakeStore()
        await _app(store).update_tags(
            "", "d1", tags=[_new("t", "v")], replace=True, if_match=header
        )
        change = store.changes[0][2]
        assert change.if_tags_etag == etag
        assert change.new_tags_etag
        assert not change.create
        assert change.set[0].timestamp == NOW

    async def test_clearing_a_missing_device_is_not_an_error(self) -> None:
        await _app(FakeStore(WriteOutcome.NOT_FOUND)).clear_inventory("", "nope")

    async def test_zero_limit_means_unlimited(self) -> None:
        store = FakeStore()
        app = InventoryApp(store, limit_attributes=0, limit_tags=5)  # type: ignore[arg-type]
        await app.update_attributes(
            "", "d1", attributes=[_new("a", "1", "inventory"), _new("t", "1", "tags")]
        )
        assert store.changes[0][2].limits == {"tags": 5}


class TestPeerWrites:
    async def test_scope_from_the_path_wins(self) -> None:
        store = FakeStore()
        await _app(store).update_attributes(
            "", "d1", attributes=[_new("mac", "m", "inventory")], scope="identity"
        )
        assert store.changes[0][2].set == (Attribute(name="mac", scope="identity", value="m"),)

    async def test_check_in_time(self) -> None:
        store = FakeStore()
        await _app(store).update_attributes(
            "", "d1", attributes=[_new("check_in_time", "2025-06-01T14:00:00+02:00", "system")]
        )
        assert store.changes[0][2].set[0].value == NOW

    async def test_if_unmodified_since(self) -> None:
        store = FakeStore()
        await _app(store).update_attributes(
            "", "d1", attributes=[], if_unmodified_since="Sun, 01 Jun 2025 12:00:00 GMT"
        )
        assert store.changes[0][2].if_unmodified_since == NOW

    async def test_statuses(self) -> None:
        store = FakeStore()
        app = _app(store)
        await app.update_statuses(
            "", "accepted", [("d1", 3), ("d2", 1)], check_ins={"d2": "2025-06-01T14:00:00+02:00"}
        )
        result = await app.update_statuses("", "decommissioned", [("d1", 4), ("d2", 1)])
        assert store.statuses == [("accepted", [("d1", 3), ("d2", 1)], {"d2": NOW})]
        assert store.deleted == [["d1", "d2"]]
        assert result.deleted_count == 2
        with pytest.raises(BadRequest):
            await app.update_statuses("", "gone", [("d1", 1)])
        for wrong in ("yesterday", "2025-06-01T12:00:00"):
            with pytest.raises(BadRequest, match="check_in_time"):
                await app.update_statuses("", "accepted", [("d1", 5)], check_ins={"d1": wrong})
        assert len(store.statuses) == 1


class TestReindex:
    async def test_monitor_attributes(self) -> None:
        store = FakeStore()
        monitor = FakeDevicemonitor(alerts=2)
        await _app(store, monitor).reindex("acme", "d1", service="devicemonitor")
        assert monitor.calls == [("acme", "d1")]
        change = store.changes[0][2]
        assert change.set == (
            Attribute(name="alert_count", scope="monitor", value=2.0),
            Attribute(name="alerts", scope="monitor", value=True),
        )
        assert change.create

    async def test_without_devicemonitor(self) -> None:
        with pytest.raises(ServiceUnavailable):
            await _app(FakeStore()).reindex("", "d1", service="devicemonitor")


class TestDevicemonitorClient:
    async def test_counts_latest_alerts(self) -> None:
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.raw_path.decode())
            return httpx.Response(200, content=json.dumps([{"id": 1}, {"id": 2}]))

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = HttpDevicemonitorClient(http, "http://devicemonitor")
            assert await client.count_latest_alerts("", "a/b") == 2
        assert seen == ["/api/internal/v1/devicemonitor/tenants//devices/a%2Fb/alerts/latest"]

    async def test_unexpected_document(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"alerts": []})

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = HttpDevicemonitorClient(http, "http://devicemonitor")
            with pytest.raises(BadGateway):
                await client.count_latest_alerts("t", "d")
