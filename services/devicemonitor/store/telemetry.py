"""Telemetry on MongoDB: one document per device and hour, the latest samples, thresholds.

An hour's document holds, per metric and minute, the count, sum, lowest and highest reading
(`metrics.<metric>.<MM>.{n,s,lo,hi}`), and the same per five minutes (`fives.<metric>.<K>`,
what a range in steps of five minutes reads: a fifth of the data), added to with `$inc`,
`$min` and `$max`, so a report never reads it first and a document's size is bounded by the
minutes of an hour. A report
is one transaction: the hours' statistics, the device's latest samples and the metrics out
of range (its `telemetry` document), the alerts they raise and the effects of those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document, TenantCollection, atomically
from services.devicemonitor.models import MinuteStats, Threshold, Thresholds
from services.devicemonitor.store import (
    DeviceTelemetry,
    Minutes,
    SamplePlan,
    StreamedSample,
)
from services.devicemonitor.store.indexes import SAMPLES, TELEMETRY, THRESHOLDS
from services.devicemonitor.store.mongo import MongoStore

__all__ = ["RECENT", "MongoTelemetryStore"]

# Samples kept with the latest for streams to catch up from.
RECENT: Final = 32
_HOUR: Final = timedelta(hours=1)
_MINUTES: Final = "metrics"
_FIVES: Final = "fives"
_FIELDS: Final = {60: _MINUTES, 300: _FIVES}


def _fives(minutes: Mapping[int, MinuteStats]) -> dict[int, MinuteStats]:
    merged: dict[int, MinuteStats] = {}
    for minute, stats in minutes.items():
        current = merged.get(minute // 5)
        merged[minute // 5] = stats if current is None else current.merge(stats)
    return merged


def _hour_update(
    stats: Mapping[str, Mapping[int, MinuteStats]], units: Mapping[str, str], expire_at: datetime
) -> Document:
    inc: Document = {}
    low: Document = {}
    high: Document = {}
    for metric, minutes in stats.items():
        for field, spans in ((_MINUTES, minutes), (_FIVES, _fives(minutes))):
            for span, s in spans.items():
                base = f"{field}.{metric}.{span:02d}"
                inc[f"{base}.n"] = s.n
                inc[f"{base}.s"] = s.total
                low[f"{base}.lo"] = s.low
                high[f"{base}.hi"] = s.high
    return {
        "$inc": inc,
        "$min": low,
        "$max": high,
        "$set": {f"units.{metric}": units.get(metric, "") for metric in stats},
        "$setOnInsert": {"expire_at": expire_at},
    }


class MongoTelemetryStore:
    """Telemetry collections of one database; alerts are written through `MongoStore`."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        *,
        alerts: MongoStore,
        retention: timedelta,
    ) -> None:
        self._client = client
        self._db = db
        self._alerts = alerts
        self._retention = retention

    def _coll(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    async def record_samples(
        self, tenant_id: str, device_id: str, plan: Callable[[DeviceTelemetry], SamplePlan]
    ) -> SamplePlan:
        """Write what `plan` decides from the device's current state, all at once."""

        async def work(session: AsyncClientSession) -> SamplePlan:
            current = await self._coll(TELEMETRY, tenant_id).find_one(
                {"device_id": device_id}, {"timestamp": 1, "seq": 1, "breaches": 1}, session=session
            )
            state = DeviceTelemetry(
                latest=current["timestamp"] if current else None,
                breaches=frozenset(current.get("breaches", ())) if current else frozenset(),
            )
            decided = plan(state)
            if decided.samples:
                seq = current.get("seq", 0) if current else 0
                await self._write(tenant_id, device_id, decided, state, seq, session)
            return decided

        return await atomically(self._client, work)

    async def _write(
        self,
        tenant_id: str,
        device_id: str,
        plan: SamplePlan,
        state: DeviceTelemetry,
        seq: int,
        session: AsyncClientSession,
    ) -> None:
        samples = self._coll(SAMPLES, tenant_id)
        for hour, stats in plan.stats.items():
            update = _hour_update(stats, plan.units, hour + _HOUR + self._retention)
            await samples.update_one(
                {"device_id": device_id, "hour": hour}, update, upsert=True, session=session
            )
        latest_time, latest = plan.samples[-1]
        recent = [
            {"at": seq + i, "sample": sample} for i, (_, sample) in enumerate(plan.samples, 1)
        ]
        breaches = (state.breaches | plan.opened) - plan.closed
        await self._coll(TELEMETRY, tenant_id).update_one(
            {"device_id": device_id},
            {
                "$set": {
                    "timestamp": latest_time,
                    "seq": seq + len(plan.samples),
                    "sample": latest,
                    "breaches": sorted(breaches),
                },
                "$push": {"recent": {"$each": recent[-RECENT:], "$slice": -RECENT}},
            },
            upsert=True,
            session=session,
        )
        await self._alerts.write_alerts(
            tenant_id, plan.alerts, effects=plan.effects, session=session
        )

    async def latest_sample(self, tenant_id: str, device_id: str) -> StreamedSample | None:
        """The device's latest sample, or None."""
        doc = await self._coll(TELEMETRY, tenant_id).find_one(
            {"device_id": device_id}, {"seq": 1, "sample": 1}
        )
        return StreamedSample(seq=doc["seq"], sample=doc["sample"]) if doc else None

    async def samples_after(self, tenant_id: str, device_id: str, seq: int) -> list[StreamedSample]:
        """The device's recent samples after sequence `seq`, oldest first."""
        doc = await self._coll(TELEMETRY, tenant_id).find_one(
            {"device_id": device_id, "seq": {"$gt": seq}}, {"recent": 1}
        )
        if doc is None:
            return []
        return [
            StreamedSample(seq=item["at"], sample=item["sample"])
            for item in doc.get("recent", ())
            if item["at"] > seq
        ]

    async def minutes(
        self,
        tenant_id: str,
        device_id: str,
        *,
        metrics: Sequence[str] | None,
        start: datetime,
        end: datetime,
        step: int,
    ) -> Minutes:
        """Statistics per `step` (60 or 300 s) of the metrics (all if None) in [start, end)'s
        hours."""
        field = _FIELDS[step]
        projection: Document = {"hour": 1, "units": 1}
        if metrics is None:
            projection[field] = 1
        else:
            projection.update({f"{field}.{m}": 1 for m in metrics})
        first_hour = start.replace(minute=0, second=0, microsecond=0)
        cursor = (
            self._coll(SAMPLES, tenant_id)
            .find({"device_id": device_id, "hour": {"$gte": first_hour, "$lt": end}}, projection)
            .sort("hour", ASCENDING)
        )
        found: Minutes = {}
        async for doc in cursor:
            hour = int(doc["hour"].timestamp())
            units: dict[str, Any] = doc.get("units", {})
            for metric, spans in doc.get(field, {}).items():
                _, series = found.setdefault(metric, (str(units.get(metric, "")), []))
                series.extend(
                    (hour + step * int(span), MinuteStats(s["n"], s["s"], s["lo"], s["hi"]))
                    for span, s in sorted(spans.items())
                )
        return found

    async def get_thresholds(self, tenant_id: str) -> Thresholds:
        """The tenant's thresholds."""
        doc = await self._coll(THRESHOLDS, tenant_id).find_one({}, {"rules": 1})
        rules: list[Document] = doc["rules"] if doc else []
        return {
            rule["metric"]: Threshold(min=rule.get("min"), max=rule.get("max")) for rule in rules
        }

    async def set_thresholds(self, tenant_id: str, thresholds: Thresholds) -> None:
        """Replace the tenant's thresholds."""
        # A list of rules: metric names are free text, not field names.
        rules = [
            {"metric": metric, **rule.model_dump(exclude_none=True)}
            for metric, rule in sorted(thresholds.items())
        ]
        await self._coll(THRESHOLDS, tenant_id).update_one(
            {}, {"$set": {"rules": rules}}, upsert=True
        )
