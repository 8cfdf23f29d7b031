"""Deployment use-cases: creation, device polling (`next`), status reports, logs, aborts."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from common.core.errors import BadRequest, Conflict, NotFound
from services.deployments.app.artifacts import parse_uuid
from services.deployments.app.errors import (
    DeploymentAborted,
    DeploymentAlreadyFinished,
    DeploymentNotFound,
    DeviceDecommissioned,
    NoArtifact,
    NoDevices,
)
from services.deployments.clients import Inventory
from services.deployments.models import (
    STAT_NAMES,
    Deployment,
    DeviceDeployment,
    DeviceDeploymentStatus,
    LastDeviceDeployment,
    LogMessage,
    NextRequest,
)
from services.deployments.storage import Link, ObjectNotFound, Storage, object_key
from services.deployments.storage.signing import URLSigner
from services.deployments.store import (
    DataStore,
    DeploymentFilter,
    DuplicateDeployment,
    StatsChange,
)

__all__ = [
    "CONFIGURATION_PATH",
    "DEVICE_LINK_EXPIRE",
    "REPORTABLE_STATUSES",
    "DeploymentsApp",
    "DeviceDeploymentView",
    "Instructions",
]

_log = logging.getLogger("deployments.deployments")

# Device update links live 24 hours.
DEVICE_LINK_EXPIRE: Final = timedelta(hours=24)
CONFIGURATION_PATH: Final = "/api/devices/v1/deployments/download/configuration"
# What a device may report; anything else (including `pending`) is refused.
REPORTABLE_STATUSES: Final = frozenset(
    {
        DeviceDeploymentStatus.DOWNLOADING,
        DeviceDeploymentStatus.INSTALLING,
        DeviceDeploymentStatus.REBOOTING,
        DeviceDeploymentStatus.SUCCESS,
        DeviceDeploymentStatus.FAILURE,
        DeviceDeploymentStatus.ALREADY_INSTALLED,
        DeviceDeploymentStatus.PAUSE_BEFORE_INSTALLING,
        DeviceDeploymentStatus.PAUSE_BEFORE_COMMITTING,
        DeviceDeploymentStatus.PAUSE_BEFORE_REBOOTING,
    }
)
_MAX_SUBSTATE: Final = 200
_MAX_NAME: Final = 4096
_CAS_ATTEMPTS: Final = 16
# How many pending deployments a decommission walks through at most.
_MAX_PENDING_WALK: Final = 1000
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
class Instructions:
    """What a device is told to install."""

    deployment_id: str
    artifact_id: str | None
    artifact_name: str
    device_types: list[str]
    source: Link


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


def _awaiting_retry(dd: DeviceDeployment) -> bool:
    """Whether a failed attempt was retried and the device has not asked for it yet."""
    return dd.attempts > 1 and dd.status is DeviceDeploymentStatus.PENDING and dd.request is None


def _fresh_stats(pending: int) -> dict[str, int]:
    stats = dict.fromkeys(STAT_NAMES, 0)
    stats["pending"] = pending
    return stats


class DeploymentsApp:
    """Deployments and what devices do with them."""

    def __init__(
        self,
        store: DataStore,
        storage: Storage,
        inventory: Inventory,
        signer: URLSigner,
    ) -> None:
        self._store = store
        self._storage = storage
        self._inventory = inventory
        self._signer = signer

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
            await self._store.insert_deployment(tenant_id, deployment, checksum=checksum)
        except DuplicateDeployment:
            raise Conflict(
                "Invalid deployment definition: there is already an active deployment "
                "with the same parameters"
            ) from None
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

    # --- the device side ---------------------------------------------------------------

    async def next_for_device(
        self, tenant_id: str, device_id: str, *, request: NextRequest, external_url: str
    ) -> Instructions | None:
        """What the device should install next, or None (204).

        Cost per poll (indexed queries, asserted by the store tests): while an update is
        under way, 1 (the active device deployment, which embeds its artifact); with nothing
        to do, 3 (active, latest finished, next deployment); on the first poll of a new
        deployment, 6: those 3, the smallest compatible artifact, the atomic counter claim
        (`$inc` guarded by the room left) and the insert of the device deployment; +1 upsert
        of the last status when it ends at once (no artifact, already installed), +1 when
        the deployment's status moves forward (at most twice per deployment).
        """
        dd = await self._store.find_active_device_deployment(tenant_id, device_id)
        if dd is None:
            latest = await self._store.find_latest_inactive_device_deployment(tenant_id, device_id)
            created_after = latest.created if latest else None
            for _ in range(_MAX_PENDING_WALK):
                deployment = await self._store.find_next_deployment(
                    tenant_id, device_id, created_after
                )
                if deployment is None:
                    return None
                dd = await self._start(tenant_id, deployment, device_id, request)
                if dd is not None:
                    break
                # The deployment has no room left: look at the next one.
                created_after = deployment.created
            if dd is None or not dd.active:
                return None
        elif dd.request is None:
            dd = dd.model_copy(update={"request": request, "device_type": request.device_type})
            await self._store.save_device_deployment_request(tenant_id, dd)
        elif dd.request != request:
            await self._move(tenant_id, dd, DeviceDeploymentStatus.FAILURE)
            raise Conflict("Device provided conflicting request data")
        return await self._instructions(tenant_id, dd, request, external_url)

    async def _start(
        self, tenant_id: str, deployment: Deployment, device_id: str, request: NextRequest
    ) -> DeviceDeployment | None:
        """Create the device's part in the deployment (None: the deployment is full).

        The counters are claimed first (`device_count < max_devices`, atomically), then the
        device deployment is inserted; if a concurrent poll of the same device won the
        insert, the claim is given back and that device deployment is used.
        """
        status = DeviceDeploymentStatus.PENDING
        image = None
        if deployment.type == "software":
            image = await self._store.smallest_compatible_artifact(
                tenant_id, deployment.artifacts, request.device_type
            )
            if image is None:
                status = DeviceDeploymentStatus.NOARTIFACT
            elif not deployment.force_installation and request.artifact_name == image.name:
                status = DeviceDeploymentStatus.ALREADY_INSTALLED
        change = StatsChange(
            decrement=None if status.active else "pending",
            increment=None if status.active else status.label,
            devices=1,
            add_size=image.size if image is not None and status.active else 0,
        )
        if not await self._store.change_stats(tenant_id, deployment.id, change, require_room=True):
            return None
        now = datetime.now(UTC)
        dd = DeviceDeployment(
            id=str(uuid.uuid4()),
            deployment_id=deployment.id,
            device_id=device_id,
            status=status,
            active=status.active,
            created=deployment.created,
            started=None if status.active else now,
            finished=None if status.active else now,
            device_type=request.device_type,
            image=image,
            request=request,
            deployment_type=deployment.type,
            force_installation=deployment.force_installation,
            artifact_name=deployment.artifact_name,
            retries=deployment.retries,
        )
        stored, created = await self._store.insert_device_deployment(tenant_id, dd)
        if not created:
            await self._store.change_stats(tenant_id, deployment.id, change.inverse())
            return stored
        if not status.active:
            await self._save_last(tenant_id, stored)
        return stored

    async def _instructions(
        self, tenant_id: str, dd: DeviceDeployment, request: NextRequest, external_url: str
    ) -> Instructions | None:
        expire = datetime.now(UTC).replace(microsecond=0) + DEVICE_LINK_EXPIRE
        if dd.deployment_type == "configuration":
            path = f"{CONFIGURATION_PATH}/{dd.deployment_id}/{request.device_type}/{dd.device_id}"
            uri = self._signer.sign(
                base_url=external_url, method="GET", path=path, expire=expire, tenant_id=tenant_id
            )
            return Instructions(
                deployment_id=dd.deployment_id,
                artifact_id=None,
                artifact_name=dd.artifact_name,
                device_types=[request.device_type],
                source=Link(uri=uri, expire=expire),
            )
        if dd.image is None:
            return None
        try:
            link = await self._storage.download_link(
                object_key(tenant_id, dd.image.id),
                expire=DEVICE_LINK_EXPIRE,
                filename=f"{dd.image.name}.mender",
                external_url=external_url,
            )
        except ObjectNotFound:
            _log.error("artifact %s of deployment %s has no file", dd.image.id, dd.deployment_id)
            raise NotFound("the artifact file of the deployment is missing") from None
        return Instructions(
            deployment_id=dd.deployment_id,
            artifact_id=dd.image.id,
            artifact_name=dd.image.name,
            device_types=list(dd.image.meta.device_types_compatible),
            source=link,
        )

    async def report_status(
        self,
        tenant_id: str,
        device_id: str,
        deployment_id: str,
        *,
        status: str,
        substate: str | None = None,
    ) -> None:
        """Record a device's status report (no-op when unchanged)."""
        try:
            new = DeviceDeploymentStatus.from_label(status)
        except ValueError:
            new = None
        if new is None or new not in REPORTABLE_STATUSES:
            raise BadRequest(f"invalid status: {status!r} may not be reported by a device")
        if substate is not None and len(substate) > _MAX_SUBSTATE:
            raise BadRequest(f"substate: the length must be no more than {_MAX_SUBSTATE}")
        dd = await self._store.get_device_deployment(tenant_id, deployment_id, device_id)
        if dd is None:
            raise NotFound("Resource not found")
        await self._move(tenant_id, dd, new, substate=substate, reported=True)

    async def _move(
        self,
        tenant_id: str,
        dd: DeviceDeployment,
        new: DeviceDeploymentStatus,
        *,
        substate: str | None = None,
        reported: bool = False,
    ) -> bool:
        """Change a device deployment's status and move one count in the statistics.

        Compare-and-set on the old status, so concurrent reports never count twice.
        A failure the device reports while it has retries left starts its next attempt
        instead: the device deployment is pending again and the device gets it on its next
        poll. Returns whether the status changed.
        """
        current: DeviceDeployment | None = dd
        for _ in range(_CAS_ATTEMPTS):
            if current is None:
                raise NotFound("Resource not found")
            if reported and current.status is DeviceDeploymentStatus.ABORTED:
                raise DeploymentAborted()
            if reported and current.status is DeviceDeploymentStatus.DECOMMISSIONED:
                raise DeviceDecommissioned()
            if current.status is new or (reported and _awaiting_retry(current)):
                # A retried attempt is not under way before the device asks for it again:
                # a report now repeats the one that ended the previous attempt.
                return False
            target = new
            if (
                reported
                and new is DeviceDeploymentStatus.FAILURE
                and current.attempts <= current.retries
            ):
                target = DeviceDeploymentStatus.PENDING
                updated = await self._store.restart_device_deployment(tenant_id, current)
            else:
                updated = await self._store.update_device_deployment_status(
                    tenant_id, current, status=new, substate=substate, now=datetime.now(UTC)
                )
            if updated is not None:
                await self._store.change_stats(
                    tenant_id,
                    current.deployment_id,
                    StatsChange(decrement=current.status.label, increment=target.label),
                )
                if not target.active:
                    await self._save_last(tenant_id, updated)
                return True
            current = await self._store.get_device_deployment(
                tenant_id, current.deployment_id, current.device_id
            )
        raise Conflict("the device deployment is being changed concurrently; retry")

    async def _save_last(self, tenant_id: str, dd: DeviceDeployment) -> None:
        await self._store.save_last_status(
            tenant_id,
            LastDeviceDeployment(
                device_id=dd.device_id,
                deployment_id=dd.deployment_id,
                device_deployment_id=dd.id,
                status=dd.status.label,
            ),
        )

    async def save_log(
        self, tenant_id: str, device_id: str, deployment_id: str, messages: list[LogMessage]
    ) -> None:
        """Store a device's deployment log."""
        if not messages:
            raise BadRequest("messages: cannot be blank.")
        dd = await self._store.get_device_deployment(tenant_id, deployment_id, device_id)
        if dd is None:
            raise DeploymentNotFound()
        await self._store.save_log(tenant_id, deployment_id, device_id, messages)
        await self._store.set_log_available(tenant_id, deployment_id, device_id)

    async def configuration_artifact_source(
        self,
        *,
        method: str,
        path: str,
        query: dict[str, str],
        deployment_id: str,
        device_id: str,
    ) -> tuple[Deployment, str]:
        """Check a signed configuration link; the deployment and the tenant it belongs to."""
        self._signer.verify(method=method, path=path, query=query)
        tenant_id = query.get("tenant_id", "")
        deployment = await self._store.get_deployment(tenant_id, deployment_id)
        if deployment is None or deployment.type != "configuration":
            raise NotFound(f"deployment with id '{deployment_id}' not found")
        if device_id not in deployment.device_list:
            raise NotFound(f"deployment with id '{deployment_id}' not found")
        return deployment, tenant_id

    # --- management actions ------------------------------------------------------------

    async def abort(self, tenant_id: str, deployment_id: str) -> None:
        """Abort: unfinished device deployments become aborted and the deployment finishes."""
        deployment = await self.get(tenant_id, deployment_id)
        if deployment.status == "finished":
            raise DeploymentAlreadyFinished()
        now = datetime.now(UTC)
        await self._store.abort_device_deployments(tenant_id, deployment.id, now=now)
        stats = await self._store.count_device_deployments_by_status(tenant_id, deployment.id)
        await self._store.finish_deployment(tenant_id, deployment.id, stats=stats, now=now)

    async def abort_for_device(self, tenant_id: str, device_id: str) -> None:
        """Abort the device's unfinished device deployments."""
        await self._end_device(tenant_id, device_id, DeviceDeploymentStatus.ABORTED)

    async def decommission_device(self, tenant_id: str, device_id: str) -> None:
        """The device is gone: its unfinished and pending deployments end as decommissioned."""
        await self._end_device(tenant_id, device_id, DeviceDeploymentStatus.DECOMMISSIONED)
        created_after: datetime | None = None
        for _ in range(_MAX_PENDING_WALK):
            deployment = await self._store.find_next_deployment(tenant_id, device_id, created_after)
            if deployment is None:
                break
            created_after = deployment.created
            existing = await self._store.get_device_deployment(tenant_id, deployment.id, device_id)
            if existing is not None:
                if existing.active:
                    await self._move(tenant_id, existing, DeviceDeploymentStatus.DECOMMISSIONED)
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
            if not await self._store.change_stats(
                tenant_id, deployment.id, change, require_room=True
            ):
                continue
            stored, created = await self._store.insert_device_deployment(tenant_id, dd)
            if not created:
                await self._store.change_stats(tenant_id, deployment.id, change.inverse())
                if stored.active:
                    await self._move(tenant_id, stored, DeviceDeploymentStatus.DECOMMISSIONED)

    async def _end_device(
        self, tenant_id: str, device_id: str, status: DeviceDeploymentStatus
    ) -> None:
        for _ in range(_MAX_PENDING_WALK):
            dd = await self._store.find_active_device_deployment(tenant_id, device_id)
            if dd is None:
                return
            await self._move(tenant_id, dd, status)

    async def delete_device_history(self, tenant_id: str, device_id: str) -> None:
        """Forget the device's finished deployments (it becomes eligible for them again)."""
        await self._store.delete_device_history(tenant_id, device_id, datetime.now(UTC))
