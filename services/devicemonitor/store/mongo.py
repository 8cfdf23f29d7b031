"""The devicemonitor store on MongoDB (the only module of the service using pymongo).

An alert batch is one transaction: the alerts, each device's latest alert per name, and the
effects the batch queues for other services are written together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document, TenantCollection, atomically
from common.core.outbox import Effect, Outbox
from services.devicemonitor.models import Alert, AlertQuery, Level, MonitorConfiguration
from services.devicemonitor.store.indexes import (
    ALERTS,
    CONFIGURATIONS,
    LATEST,
    SAMPLES,
    TELEMETRY,
)

__all__ = ["MongoStore"]

_ALERT_FIELDS: Final = ("device_id", "name", "level", "subject", "timestamp")


def _alert_doc(alert: Alert) -> Document:
    return {"_id": alert.id, **alert.model_dump(mode="python", exclude={"id"}, exclude_none=True)}


def _alert(doc: Mapping[str, Any]) -> Alert:
    return Alert.model_validate({"id": doc["_id"], **{k: doc[k] for k in _ALERT_FIELDS}})


def _time_range(query: AlertQuery) -> Document:
    bounds: Document = {}
    if query.issued_after is not None:
        bounds["$gte"] = query.issued_after
    if query.issued_before is not None:
        bounds["$lt"] = query.issued_before
    return {"timestamp": bounds} if bounds else {}


class MongoStore:
    """Alerts, latest alerts and monitor configurations on one database, and the outbox."""

    def __init__(
        self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document], *, outbox: Outbox
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox

    def _coll(self, name: str, tenant_id: str) -> TenantCollection:
        return TenantCollection(self._db[name], tenant_id)

    async def add_alerts(
        self, tenant_id: str, alerts: Sequence[Alert], *, effects: Sequence[Effect]
    ) -> None:
        """Record alerts, their devices' latest alert per name, and the effects, at once."""

        async def work(session: AsyncClientSession) -> None:
            await self.write_alerts(tenant_id, alerts, effects=effects, session=session)

        await atomically(self._client, work)

    async def write_alerts(
        self,
        tenant_id: str,
        alerts: Sequence[Alert],
        *,
        effects: Sequence[Effect],
        session: AsyncClientSession,
    ) -> None:
        """Write alerts, latest alerts and effects within the caller's transaction."""
        if alerts:
            docs = [_alert_doc(a) for a in alerts]
            await self._coll(ALERTS, tenant_id).insert_many(docs, session=session)
            latest = self._coll(LATEST, tenant_id)
            # The newest alert of each device and name in the batch; an older report than
            # the one stored (a device's delayed retry) changes nothing.
            newest: dict[tuple[str, str], Alert] = {}
            for alert in alerts:
                key = (alert.device_id, alert.name)
                if key not in newest or alert.timestamp >= newest[key].timestamp:
                    newest[key] = alert
            for (device_id, name), alert in newest.items():
                stored = await latest.find_one(
                    {"device_id": device_id, "name": name}, {"timestamp": 1}, session=session
                )
                if stored is not None and stored["timestamp"] > alert.timestamp:
                    continue
                doc = _alert_doc(alert)
                doc["alert_id"] = doc.pop("_id")
                await latest.update_one(
                    {"device_id": device_id, "name": name},
                    {"$set": doc},
                    upsert=True,
                    session=session,
                )
        await self._outbox.add(effects, session=session)

    async def list_alerts(
        self, tenant_id: str, device_id: str, query: AlertQuery, *, skip: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of a device's alerts and how many match in all."""
        alerts = self._coll(ALERTS, tenant_id)
        filter_ = {"device_id": device_id, **_time_range(query)}
        order = ASCENDING if query.sort_ascending else DESCENDING
        cursor = alerts.find(filter_).sort([("timestamp", order), ("_id", order)])
        docs = await cursor.skip(skip).limit(limit).to_list()
        total = await alerts.count_documents(filter_)
        return [_alert(d) for d in docs], total

    async def open_alerts(
        self, tenant_id: str, device_id: str, *, skip: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of the device's latest alert per name still at CRITICAL, and their number."""
        latest = self._coll(LATEST, tenant_id)
        filter_ = {"device_id": device_id, "level": Level.CRITICAL.value}
        cursor = latest.find(filter_).sort("timestamp", DESCENDING).skip(skip).limit(limit)
        docs = await cursor.to_list()
        total = await latest.count_documents(filter_)
        return [_alert({**d, "_id": d["alert_id"]}) for d in docs], total

    async def set_configuration(
        self,
        tenant_id: str,
        device_id: str,
        configuration: Sequence[MonitorConfiguration],
        *,
        now: datetime,
    ) -> None:
        """Replace the monitor configuration a device reported."""
        await self._coll(CONFIGURATIONS, tenant_id).update_one(
            {"_id": device_id},
            # Kept as JSON text: the checks' keys are the device's, not field names to trust.
            {"$set": {"configuration": json.dumps(list(configuration)), "updated_ts": now}},
            upsert=True,
        )

    async def get_configuration(self, tenant_id: str, device_id: str) -> list[MonitorConfiguration]:
        """The monitor configuration a device reported (empty if none)."""
        doc = await self._coll(CONFIGURATIONS, tenant_id).find_one({"_id": device_id})
        configuration: list[MonitorConfiguration] = json.loads(doc["configuration"]) if doc else []
        return configuration

    async def delete_device(self, tenant_id: str, device_id: str) -> None:
        """Forget everything stored about a device: alerts, configuration, telemetry."""

        async def work(session: AsyncClientSession) -> None:
            for name in (ALERTS, LATEST, SAMPLES, TELEMETRY):
                await self._coll(name, tenant_id).delete_many(
                    {"device_id": device_id}, session=session
                )
            await self._coll(CONFIGURATIONS, tenant_id).delete_one(
                {"_id": device_id}, session=session
            )

        await atomically(self._client, work)
