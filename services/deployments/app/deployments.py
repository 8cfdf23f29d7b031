"""The operator's deployment use-cases: creation, listings, statistics, logs, aborts."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from common.core.audit import Actor
from common.core.errors import BadRequest, Conflict, NotFound
from services.deployments.app.artifacts import parse_uuid
from services.deployments.app.audit import deployment_audit
from services.deployments.app.errors import (
    DeploymentAlreadyFinished,
    DeploymentNotFound,
    NoArtifact,
    NoDevices,
)
from services.deployments.app.reach import Reach
from services.deployments.app.statuses import MAX_PENDING_WALK, change_status
from services.deployments.clients import Inventory
from services.deployments.models import (
    STAT_NAMES,
    Deployment,
    DeviceDeployment,
    DeviceDeploymentStatus,
    LastDeviceDeployment,
    LogMessage,
)
from services.deployments.store import (
    DataStore,
    DeploymentFilter,
    DuplicateDeployment,
    StatsChange,
)

__all__ = ["DeploymentsApp", "DeviceDeploymentView", "status_filter"]

_log = logging.getLogger("deployments.deployments")

_MAX_NAME: Final = 4096
_STATUS_GROUPS: Final[dict[str, frozenset[DeviceDeploymentStatus]]] = {
    "pause": frozenset(
        {
            DeviceDeploymentStatus.PAUSE_BEFORE_INSTALLING,
            DeviceDeploymentStatus.PAUSE_BEFORE_COMMITTING,
            DeviceDeploymentStatus.PAUSE_BEFORE_REBOOTING,
        }
    ),
    "active": frozenset(s for s in DeviceDeploymentStatus if s.active),
    "finished": frozenset(s for s in DeviceDeploymentStatus if not s.active),
}


@dataclass(frozen=True, slots=True)
class DeviceDeploymentView:
    """A device deployment with the deployment it belongs to."""

    device_deployment: DeviceDeployment
    deployment: Deployment


def status_filter(raw: str | None) -> list[DeviceDeploymentStatus] | None:
    """Statuses matching a `status` query value (a status, `pause`, `active`, `finished`)."""
    if raw is None or raw == "":
        return None
    if raw in _STATUS_GROUPS:
        return sorted(_STATUS_GROUPS[raw])
    try:
        return [DeviceDeploymentStatus.from_label(raw)]
    except ValueError:
        raise BadRequest(f"invalid status query: {raw!r} is not a valid status") from None


def _checksum(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _fresh_stats(pending: int) -> dict[str, int]:
    stats = dict.fromkeys(STAT_NAMES, 0)
    stats["pending"] = pending
    return stats


class DeploymentsApp:
    """Deployments as the operator sees them: created, listed, counted, aborted."""

    def __init__(self, store: DataStore, inventory: Inventory, reach: Reach) -> None:
        self._store = store
        self._inventory = inventory
        # Told of each new deployment, so that idle polls see it at once.
        self._reach = reach

    # --- creation ---------------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        *,
        name: str,
        artifact_name: str,
        devices: Sequence[str] | None = None,
        all_devices: bool = False,
        group: str | None = None,
        force_installation: bool = False,
        actor: Actor | None = None,
    ) -> Deployment:
        """Create a software deployment for devices, a group or all accepted devices."""
        if not name:
            raise BadRequest("Validating request body: name: cannot be blank.")
        if not artifact_name:
            raise BadRequest("Validating request body: artifact_name: cannot be blank.")
        if len(name) > _MAX_NAME or len(artifact_name) > _MAX_NAME:
            raise BadRequest("Validating request body: names may have at most 4096 characters.")
        device_list = list(dict.fromkeys(devices or []))
        if any(not isinstance(d, str) or not d for d in device_list):
            raise BadRequest("Validating request body: devices: ids must be non-empty strings.")
        if group is not None and (device_list or all_devices):
            raise BadRequest(
                "Validating request body: a group deployment takes no devices or all_devices."
            )
        if device_list and all_devices:
            raise BadRequest(
                "Validating request body: devices: must be blank when all_devices is set."
            )
        if group is None and not device_list and not all_devices:
            raise BadRequest("Validating request body: devices: cannot be blank.")

        artifacts = await self._store.artifacts_named(tenant_id, [artifact_name])
        if not artifacts:
            raise NoArtifact()

        groups: list[str] = []
        filter_: dict[str, Any] | None = None
        if group is not None:
            device_list = await self._inventory.accepted_devices(tenant_id, group=group)
            groups = [group]
            filter_ = {
                "terms": [{"scope": "system", "attribute": "group", "type": "$eq", "value": group}]
            }
        elif all_devices:
            device_list = await self._inventory.accepted_devices(tenant_id)
        elif len(device_list) == 1:
            groups = await self._inventory.device_groups(tenant_id, device_list[0])
        if not device_list:
            raise NoDevices()

        deployment = Deployment(
            id=str(uuid.uuid4()),
            name=name,
            artifact_name=artifact_name,
            artifacts=[a.id for a in artifacts],
            device_list=device_list,
            max_devices=len(device_list),
            stats=_fresh_stats(len(device_list)),
            created=datetime.now(UTC),
            groups=groups,
            filter=filter_,
            force_installation=force_installation,
        )
        checksum = _checksum(
            name=name,
            artifact_name=artifact_name,
            devices=sorted(devices or []),
            all_devices=all_devices,
            group=group,
            force_installation=force_installation,
        )
        try:
            await self._store.insert_deployment(
                tenant_id,
                deployment,
                checksum=checksum,
                effects=deployment_audit(tenant_id, actor, "create", deployment),
            )
        except DuplicateDeployment:
            raise Conflict(
                "Invalid deployment definition: there is already an active deployment "
                "with the same parameters"
            ) from None
        self._reach.forget(tenant_id)
        return deployment

    async def create_configuration(
        self,
        tenant_id: str,
        *,
        deployment_id: str,
        device_id: str,
        name: str,
        configuration: str,
        retries: int = 0,
    ) -> Deployment:
        """Create a configuration deployment for one device (called by deviceconfig)."""
        try:
            deployment_id = str(uuid.UUID(deployment_id))
        except ValueError:
            raise BadRequest("Deployment ID must be a valid UUID") from None
        if not device_id:
            raise BadRequest("device ID missing")
        if not name:
            raise BadRequest("Validating request body: name: cannot be blank.")
        deployment = Deployment(
            id=deployment_id,
            name=name,
            artifact_name=name,
            type="configuration",
            device_list=[device_id],
            max_devices=1,
            stats=_fresh_stats(1),
            created=datetime.now(UTC),
            configuration=configuration,
            retries=retries,
        )
        if await self._store.get_deployment(tenant_id, deployment_id) is not None:
            raise Conflict("Deployment with given ID already exists")
        try:
            await self._store.insert_deployment(
                tenant_id, deployment, checksum=f"configuration:{deployment_id}"
            )
        except DuplicateDeployment:
            raise Conflict("Deployment with given ID already exists") from None
        self._reach.forget(tenant_id)
        return deployment

    # --- reads ------------------------------------------------------------------------

    async def get(self, tenant_id: str, deployment_id: str) -> Deployment:
        """One deployment, or 404."""
        deployment = await self._store.get_deployment(tenant_id, parse_uuid(deployment_id))
        if deployment is None:
            raise NotFound("Resource not found")
        return deployment

    async def search(
        self, tenant_id: str, filter_: DeploymentFilter, *, skip: int, limit: int
    ) -> tuple[list[Deployment], int]:
        """A page of deployments and the number of all matches."""
        return await self._store.list_deployments(tenant_id, filter_, skip=skip, limit=limit)

    async def search_v2(
        self,
        tenant_id: str,
        filter_: DeploymentFilter,
        *,
        skip: int,
        limit: int,
        id_attribute: str | None = None,
        id_scope: str | None = None,
    ) -> tuple[list[Deployment], int]:
        """v2 listing; with `id_attribute`, fall back to a device lookup by the first name."""
        items, total = await self._store.list_deployments(
            tenant_id, filter_, skip=skip, limit=limit
        )
        if total or not id_attribute or not filter_.names:
            return items, total
        scope = id_scope or ("inventory" if id_attribute == "name" else "identity")
        device_ids = await self._inventory.find_devices(
            tenant_id, scope=scope, attribute=id_attribute, value=filter_.names[0]
        )
        if not device_ids:
            return [], 0
        fallback = DeploymentFilter(
            status=filter_.status,
            type=filter_.type,
            ids=filter_.ids,
            device_ids=device_ids,
            created_before=filter_.created_before,
            created_after=filter_.created_after,
            ascending=filter_.ascending,
        )
        return await self._store.list_deployments(tenant_id, fallback, skip=skip, limit=limit)

    async def statistics(self, tenant_id: str, deployment_id: str) -> dict[str, int]:
        """Per-status device counts of a deployment."""
        deployment = await self.get(tenant_id, deployment_id)
        return {**dict.fromkeys(STAT_NAMES, 0), **deployment.stats}

    async def statistics_list(
        self, tenant_id: str, deployment_ids: Sequence[str]
    ) -> list[tuple[str, dict[str, int]]]:
        """Statistics of several deployments; 404 if any is missing."""
        ids = [parse_uuid(i) for i in deployment_ids]
        found = {d.id: d for d in await self._store.get_deployments(tenant_id, ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise DeploymentNotFound()
        return [(i, {**dict.fromkeys(STAT_NAMES, 0), **found[i].stats}) for i in ids]

    async def device_ids(self, tenant_id: str, deployment_id: str) -> list[str]:
        """The devices a deployment targets."""
        return (await self.get(tenant_id, deployment_id)).device_list

    async def device_deployments(
        self,
        tenant_id: str,
        deployment_id: str,
        *,
        status: str | None = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> tuple[list[DeviceDeployment], int]:
        """The device deployments of a deployment (devices that asked for it so far)."""
        statuses = status_filter(status)
        deployment = await self._store.get_deployment(tenant_id, parse_uuid(deployment_id))
        if deployment is None:
            raise DeploymentNotFound()
        return await self._store.list_device_deployments(
            tenant_id, deployment_id=deployment.id, statuses=statuses, skip=skip, limit=limit
        )

    async def device_history(
        self,
        tenant_id: str,
        device_id: str,
        *,
        status: str | None = None,
        skip: int = 0,
        limit: int = 20,
    ) -> tuple[list[DeviceDeploymentView], int]:
        """A device's device deployments, newest first, with their deployments."""
        statuses = status_filter(status)
        items, total = await self._store.list_device_deployments(
            tenant_id,
            device_id=device_id,
            statuses=statuses,
            skip=skip,
            limit=limit,
            newest_first=True,
        )
        return await self._with_deployments(tenant_id, items), total

    async def device_deployments_by_ids(
        self, tenant_id: str, ids: Sequence[str], *, skip: int = 0, limit: int = 20
    ) -> tuple[list[DeviceDeploymentView], int]:
        """Device deployments by their ids, with their deployments."""
        items, total = await self._store.list_device_deployments(
            tenant_id, ids=ids, skip=skip, limit=limit
        )
        return await self._with_deployments(tenant_id, items), total

    async def _with_deployments(
        self, tenant_id: str, items: list[DeviceDeployment]
    ) -> list[DeviceDeploymentView]:
        wanted = list(dict.fromkeys(dd.deployment_id for dd in items))
        found = {d.id: d for d in await self._store.get_deployments(tenant_id, wanted)}
        return [
            DeviceDeploymentView(device_deployment=dd, deployment=found[dd.deployment_id])
            for dd in items
            if dd.deployment_id in found
        ]

    async def log(self, tenant_id: str, deployment_id: str, device_id: str) -> list[LogMessage]:
        """A device's log of a deployment, or 404."""
        messages = await self._store.get_log(tenant_id, deployment_id, device_id)
        if messages is None:
            raise NotFound("Resource not found")
        return messages

    async def last_statuses(
        self, tenant_id: str, device_ids: Sequence[str]
    ) -> list[LastDeviceDeployment]:
        """How each device's latest device deployment ended."""
        return await self._store.last_statuses(tenant_id, device_ids)

    # --- management actions ------------------------------------------------------------

    async def abort(
        self, tenant_id: str, deployment_id: str, *, actor: Actor | None = None
    ) -> None:
        """Abort: unfinished device deployments become aborted and the deployment finishes."""
        deployment = await self.get(tenant_id, deployment_id)
        if deployment.status == "finished":
            raise DeploymentAlreadyFinished()
        await self._store.abort_deployment(
            tenant_id,
            deployment.id,
            now=datetime.now(UTC),
            effects=deployment_audit(tenant_id, actor, "abort", deployment),
        )

    async def abort_for_device(self, tenant_id: str, device_id: str) -> None:
        """Abort the device's unfinished device deployments."""
        await self._end_device(tenant_id, device_id, DeviceDeploymentStatus.ABORTED)

    async def decommission_device(self, tenant_id: str, device_id: str) -> None:
        """The device is gone: its unfinished and pending deployments end as decommissioned."""
        await self._end_device(tenant_id, device_id, DeviceDeploymentStatus.DECOMMISSIONED)
        created_after: datetime | None = None
        for _ in range(MAX_PENDING_WALK):
            deployment = await self._store.find_next_deployment(tenant_id, device_id, created_after)
            if deployment is None:
                break
            created_after = deployment.created
            existing = await self._store.get_device_deployment(tenant_id, deployment.id, device_id)
            if existing is not None:
                if existing.active:
                    await change_status(
                        self._store, tenant_id, existing, DeviceDeploymentStatus.DECOMMISSIONED
                    )
                continue
            now = datetime.now(UTC)
            dd = DeviceDeployment(
                id=str(uuid.uuid4()),
                deployment_id=deployment.id,
                device_id=device_id,
                status=DeviceDeploymentStatus.DECOMMISSIONED,
                active=False,
                created=deployment.created,
                finished=now,
                deployment_type=deployment.type,
                artifact_name=deployment.artifact_name,
            )
            change = StatsChange(decrement="pending", increment="decommissioned", devices=1)
            started = await self._store.start_device_deployment(tenant_id, dd, change)
            if started is None:
                continue
            stored, created = started
            if not created and stored.active:
                await change_status(
                    self._store, tenant_id, stored, DeviceDeploymentStatus.DECOMMISSIONED
                )

    async def _end_device(
        self, tenant_id: str, device_id: str, status: DeviceDeploymentStatus
    ) -> None:
        for _ in range(MAX_PENDING_WALK):
            dd = await self._store.find_active_device_deployment(tenant_id, device_id)
            if dd is None:
                return
            await change_status(self._store, tenant_id, dd, status)

    async def recount_unfinished(self) -> None:
        """Recount the statistics of every unfinished deployment from its device deployments.

        Status changes and their counts are written in one transaction, so they cannot
        drift; this repairs statistics left wrong by an earlier version after a crash.
        """
        for tenant_id, deployment_id in await self._store.unfinished_deployments():
            recounted = await self._store.recount_stats(tenant_id, deployment_id)
            if recounted is not None:
                before, after = recounted
                _log.warning(
                    "deployment %s: statistics recounted as %s (they were %s)",
                    deployment_id,
                    {k: v for k, v in after.items() if v},
                    {k: v for k, v in before.items() if v},
                )

    async def delete_device_history(self, tenant_id: str, device_id: str) -> None:
        """Forget the device's finished deployments (it becomes eligible for them again)."""
        await self._store.delete_device_history(tenant_id, device_id, datetime.now(UTC))
