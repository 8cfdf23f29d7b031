"""Device deployments in Mongo (a device's part in a deployment), their logs and last statuses.

Field names follow Mender's collection where Mender's tools read them: `deviceid`,
`deploymentid` and an integer `status`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from common.core.mongo import Document
from services.deployments.models import (
    DeviceDeployment,
    DeviceDeploymentStatus,
    LastDeviceDeployment,
    LogMessage,
    NextRequest,
)
from services.deployments.store import DeviceDeploymentStore, StatsChange
from services.deployments.store.artifacts import artifact_doc, artifact_from_doc
from services.deployments.store.counters import DeploymentCounters
from services.deployments.store.indexes import DEVICE_DEPLOYMENTS, LAST_STATUS, LOGS

__all__ = ["LIVE", "MongoDeviceDeploymentStore"]

# Device deployments not deleted from the device's history; a deleted one's `slot` is its id.
LIVE: Final = {"slot": ""}
_COUNT_CAP: Final = 10_000
# How many of a device's newest finished device deployments are looked at for a live one.
_HISTORY_PROBE: Final = 1000


def _dd_doc(dd: DeviceDeployment) -> Document:
    return {
        "_id": dd.id,
        "deploymentid": dd.deployment_id,
        "deviceid": dd.device_id,
        "status": int(dd.status),
        "active": dd.active,
        "created": dd.created,
        "started": dd.started,
        "finished": dd.finished,
        "substate": dd.substate,
        "device_type": dd.device_type,
        "image": artifact_doc(dd.image) if dd.image is not None else None,
        "request": dd.request.model_dump() if dd.request is not None else None,
        "log": dd.log,
        "deployment_type": dd.deployment_type,
        "force_installation": dd.force_installation,
        "artifact_name": dd.artifact_name,
        "retries": dd.retries,
        "attempts": dd.attempts,
        "slot": "",
    }


def _dd(doc: Mapping[str, Any]) -> DeviceDeployment:
    image = doc.get("image")
    request = doc.get("request")
    return DeviceDeployment(
        id=str(doc["_id"]),
        deployment_id=doc["deploymentid"],
        device_id=doc["deviceid"],
        status=DeviceDeploymentStatus(doc["status"]),
        active=bool(doc.get("active")),
        created=doc["created"],
        started=doc.get("started"),
        finished=doc.get("finished"),
        deleted=doc.get("deleted"),
        substate=doc.get("substate") or "",
        device_type=doc.get("device_type") or "",
        image=artifact_from_doc(image) if image else None,
        request=NextRequest(**request) if request else None,
        log=bool(doc.get("log", False)),
        deployment_type=doc.get("deployment_type") or "software",
        force_installation=bool(doc.get("force_installation", False)),
        artifact_name=doc.get("artifact_name") or "",
        retries=int(doc.get("retries", 0)),
        attempts=int(doc.get("attempts", 1)),
    )


class MongoDeviceDeploymentStore(DeploymentCounters, DeviceDeploymentStore):
    """Device deployments: each status move and its count in one transaction."""

    async def start_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment, change: StatsChange
    ) -> tuple[DeviceDeployment, bool] | None:
        """Claim room and insert, in one transaction; an existing live one wins."""
        dd = device_deployment

        async def work(session: AsyncClientSession) -> bool:
            if not await self._apply(
                tenant_id, dd.deployment_id, change, require_room=True, session=session
            ):
                return False
            await self._c(DEVICE_DEPLOYMENTS, tenant_id).insert_one(_dd_doc(dd), session=session)
            if not dd.active:
                await self._save_last(tenant_id, dd, session=session)
            return True

        try:
            if not await self._serially(tenant_id, dd.deployment_id, work):
                return None
        except DuplicateKeyError:
            existing = await self.get_device_deployment(tenant_id, dd.deployment_id, dd.device_id)
            if existing is None:  # history-deleted between the clash and the lookup
                raise
            return existing, False
        return dd, True

    async def move_device_deployment(
        self,
        tenant_id: str,
        device_deployment: DeviceDeployment,
        *,
        status: DeviceDeploymentStatus,
        substate: str | None = None,
        now: datetime,
    ) -> DeviceDeployment | None:
        """Compare-and-set the status and move its count, in one transaction."""
        changes: dict[str, Any] = {"status": status, "active": status.active}
        if not status.active:
            changes["finished"] = now
        if substate is not None:
            changes["substate"] = substate
        if device_deployment.status is DeviceDeploymentStatus.PENDING and status is not (
            DeviceDeploymentStatus.PENDING
        ):
            changes["started"] = now
        return await self._move(tenant_id, device_deployment, changes)

    async def restart_device_deployment(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> DeviceDeployment | None:
        """Back to pending for the next attempt, with its count, in one transaction."""
        changes: dict[str, Any] = {
            "status": DeviceDeploymentStatus.PENDING,
            "active": True,
            "request": None,
            "substate": "",
            "attempts": device_deployment.attempts + 1,
        }
        return await self._move(tenant_id, device_deployment, changes)

    async def _move(
        self, tenant_id: str, dd: DeviceDeployment, changes: dict[str, Any]
    ) -> DeviceDeployment | None:
        """Apply `changes` (with a new `status`) if the status is still the document's.

        In the same transaction the status's count moves and a finished device deployment
        becomes the device's last status. None when the status changed meanwhile.
        """
        status: DeviceDeploymentStatus = changes["status"]
        stored = {k: (int(v) if k == "status" else v) for k, v in changes.items()}
        updated = dd.model_copy(update=changes)
        change = StatsChange(decrement=dd.status.label, increment=status.label)

        async def work(session: AsyncClientSession) -> bool:
            # A plain update as compare-and-set: cheaper than findAndModify.
            result = await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_one(
                {"_id": dd.id, "status": int(dd.status)}, {"$set": stored}, session=session
            )
            if result.matched_count == 0:
                return False
            await self._apply(
                tenant_id, dd.deployment_id, change, require_room=False, session=session
            )
            if not status.active:
                await self._save_last(tenant_id, updated, session=session)
            return True

        return updated if await self._serially(tenant_id, dd.deployment_id, work) else None

    async def _save_last(
        self, tenant_id: str, dd: DeviceDeployment, *, session: AsyncClientSession
    ) -> None:
        """Remember how the device's latest device deployment ended."""
        last = LastDeviceDeployment(
            device_id=dd.device_id,
            deployment_id=dd.deployment_id,
            device_deployment_id=dd.id,
            status=dd.status.label,
        )
        await self._c(LAST_STATUS, tenant_id).update_one(
            {"device_id": dd.device_id}, {"$set": last.model_dump()}, upsert=True, session=session
        )

    async def find_active_device_deployment(
        self, tenant_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """Oldest active one of the device."""
        doc = await self._c(DEVICE_DEPLOYMENTS, tenant_id).find_one(
            {"active": True, "deviceid": device_id}, sort=[("created", ASCENDING)]
        )
        return _dd(doc) if doc else None

    async def find_latest_inactive_device_deployment(
        self, tenant_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """Newest finished, live one of the device.

        History-deleted ones are skipped here rather than in the filter, which keeps the
        query on the (active, deviceid, created) index.
        """
        cursor = (
            self._c(DEVICE_DEPLOYMENTS, tenant_id)
            .find({"active": False, "deviceid": device_id}, projection={"image": 0})
            .sort([("created", DESCENDING)])
            .limit(_HISTORY_PROBE)
        )
        async for doc in cursor:
            if doc.get("slot", "") == "":
                return _dd(doc)
        return None

    async def get_device_deployment(
        self, tenant_id: str, deployment_id: str, device_id: str
    ) -> DeviceDeployment | None:
        """The live one for the pair."""
        doc = await self._c(DEVICE_DEPLOYMENTS, tenant_id).find_one(
            {"deploymentid": deployment_id, "deviceid": device_id, **LIVE}
        )
        return _dd(doc) if doc else None

    async def save_device_deployment_request(
        self, tenant_id: str, device_deployment: DeviceDeployment
    ) -> None:
        """Store the request (and device type) on the device deployment."""
        request = device_deployment.request
        await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_one(
            {"_id": device_deployment.id},
            {
                "$set": {
                    "request": request.model_dump() if request else None,
                    "device_type": device_deployment.device_type,
                }
            },
        )

    async def list_device_deployments(
        self,
        tenant_id: str,
        *,
        deployment_id: str | None = None,
        device_id: str | None = None,
        ids: Sequence[str] = (),
        statuses: Sequence[DeviceDeploymentStatus] | None = None,
        skip: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> tuple[list[DeviceDeployment], int]:
        """Find a page of live device deployments."""
        coll = self._c(DEVICE_DEPLOYMENTS, tenant_id)
        query: Document = dict(LIVE)
        if deployment_id is not None:
            query["deploymentid"] = deployment_id
        if device_id is not None:
            query["deviceid"] = device_id
        if ids:
            query["_id"] = {"$in": list(ids)}
        if statuses is not None:
            query["status"] = {"$in": [int(s) for s in statuses]}
        order = DESCENDING if newest_first else ASCENDING
        sort = [("created", order), ("_id", order)] if device_id else [("deviceid", ASCENDING)]
        cursor = coll.find(query).sort(sort).skip(skip)
        if limit is not None:
            cursor = cursor.limit(limit)
        items = [_dd(d) async for d in cursor]
        if limit is None and skip == 0:
            return items, len(items)
        return items, await coll.count_documents(query, limit=_COUNT_CAP)

    async def delete_device_history(self, tenant_id: str, device_id: str, now: datetime) -> None:
        """Soft-delete finished ones; `slot` takes the id so the pair may live again."""
        await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_many(
            {"deviceid": device_id, "active": False, **LIVE},
            [{"$set": {"deleted": {"$literal": now}, "slot": "$_id"}}],
        )

    async def save_log(
        self, tenant_id: str, deployment_id: str, device_id: str, messages: list[LogMessage]
    ) -> None:
        """Upsert the log document."""
        await self._c(LOGS, tenant_id).update_one(
            {"deploymentid": deployment_id, "deviceid": device_id},
            {"$set": {"messages": [m.model_dump() for m in messages]}},
            upsert=True,
        )

    async def get_log(
        self, tenant_id: str, deployment_id: str, device_id: str
    ) -> list[LogMessage] | None:
        """Find the log document."""
        doc = await self._c(LOGS, tenant_id).find_one(
            {"deploymentid": deployment_id, "deviceid": device_id}
        )
        if doc is None:
            return None
        return [LogMessage(**m) for m in doc.get("messages") or []]

    async def set_log_available(self, tenant_id: str, deployment_id: str, device_id: str) -> None:
        """Set the `log` flag."""
        await self._c(DEVICE_DEPLOYMENTS, tenant_id).update_one(
            {"deploymentid": deployment_id, "deviceid": device_id, **LIVE},
            {"$set": {"log": True}},
        )

    async def last_statuses(
        self, tenant_id: str, device_ids: Sequence[str]
    ) -> list[LastDeviceDeployment]:
        """Find by device ids."""
        cursor = self._c(LAST_STATUS, tenant_id).find({"device_id": {"$in": list(device_ids)}})
        fields = LastDeviceDeployment.model_fields
        return [
            LastDeviceDeployment(**{k: v for k, v in d.items() if k in fields})
            async for d in cursor
        ]
