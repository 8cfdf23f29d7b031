"""What devices do with deployments: ask for the next update, report status, send logs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from common.core.errors import BadRequest, Conflict, NotFound
from services.deployments.app.errors import DeploymentNotFound
from services.deployments.app.polltags import PollTags, TaggedContent
from services.deployments.app.reach import Reach
from services.deployments.app.statuses import MAX_PENDING_WALK, change_status
from services.deployments.models import (
    Deployment,
    DeviceDeployment,
    DeviceDeploymentStatus,
    LogMessage,
    NextRequest,
)
from services.deployments.storage import Link, ObjectNotFound, Storage, object_key
from services.deployments.storage.signing import URLSigner
from services.deployments.store import DataStore, StatsChange

__all__ = [
    "CONFIGURATION_PATH",
    "DEVICE_LINK_EXPIRE",
    "REPORTABLE_STATUSES",
    "DeviceDeploymentsApp",
    "Instructions",
    "Unchanged",
]

_log = logging.getLogger("deployments.device")

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


@dataclass(frozen=True, slots=True)
class Instructions:
    """What a device is told to install."""

    deployment_id: str
    artifact_id: str | None
    artifact_name: str
    device_types: list[str]
    source: Link
    # The answer's entity tag (`app.polltags`).
    tag: str


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The device's `If-None-Match` still stands for what it would be told (304)."""

    tag: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DeviceDeploymentsApp:
    """The device's side of deployments: `next`, status reports, logs, configuration links."""

    def __init__(
        self,
        store: DataStore,
        storage: Storage,
        signer: URLSigner,
        reach: Reach,
        tags: PollTags,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._storage = storage
        self._signer = signer
        self._reach = reach
        self._tags = tags
        self._clock = clock or _utcnow

    async def idle(self, tenant_id: str, device_id: str) -> bool:
        """Whether the device's `next` is a 204 from memory: no active deployment lists it."""
        return await self._reach.unreachable(tenant_id, device_id)

    async def next_for_device(
        self,
        tenant_id: str,
        device_id: str,
        *,
        request: NextRequest,
        external_url: str,
        if_none_match: str | None = None,
    ) -> Instructions | Unchanged | None:
        """What the device should install next, or None (204).

        `Unchanged` (304) when `if_none_match` holds a tag that still stands for the answer
        (`app.polltags`); the state is read and moved exactly as without it.

        A device that no active deployment lists gets None from memory (`Reach`). Otherwise,
        cost per poll (indexed queries, asserted by the store tests): while an update is
        under way, 1 (the active device deployment, which embeds its artifact); with nothing
        to do, 3 (active, latest finished, next deployment); on the first poll of a new
        deployment, 7: those 3, the smallest compatible artifact, then one transaction of
        the counter claim (`$inc` guarded by the room left), the insert of the device
        deployment and the commit; +1 upsert of the last status when it ends at once (no
        artifact, already installed), +1 when the deployment's status moves forward (at
        most twice per deployment).
        """
        if await self.idle(tenant_id, device_id):
            return None
        self._reach.passed_on()
        dd = await self._store.find_active_device_deployment(tenant_id, device_id)
        if dd is None:
            latest = await self._store.find_latest_inactive_device_deployment(tenant_id, device_id)
            created_after = latest.created if latest else None
            for _ in range(MAX_PENDING_WALK):
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
            await change_status(self._store, tenant_id, dd, DeviceDeploymentStatus.FAILURE)
            raise Conflict("Device provided conflicting request data")
        return await self._instructions(tenant_id, dd, request, external_url, if_none_match)

    async def _start(
        self, tenant_id: str, deployment: Deployment, device_id: str, request: NextRequest
    ) -> DeviceDeployment | None:
        """Create the device's part in the deployment (None: the deployment is full).

        The counters are claimed (`device_count < max_devices`) and the device deployment
        inserted in one transaction; if a concurrent poll of the same device inserted first,
        nothing is changed and that device deployment is used.
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
        started = await self._store.start_device_deployment(tenant_id, dd, change)
        return None if started is None else started[0]

    async def _instructions(
        self,
        tenant_id: str,
        dd: DeviceDeployment,
        request: NextRequest,
        external_url: str,
        if_none_match: str | None,
    ) -> Instructions | Unchanged | None:
        now = self._clock()
        if dd.deployment_type == "configuration":
            content: TaggedContent = (
                tenant_id,
                dd.device_id,
                dd.deployment_id,
                None,
                dd.artifact_name,
                [request.device_type],
                external_url,
            )
            if if_none_match and (tag := self._tags.unchanged(content, if_none_match, now)):
                return Unchanged(tag)
            expire = now.replace(microsecond=0) + DEVICE_LINK_EXPIRE
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
                tag=self._tags.tag(content, expire),
            )
        if dd.image is None:
            return None
        device_types = list(dd.image.meta.device_types_compatible)
        content = (
            tenant_id,
            dd.device_id,
            dd.deployment_id,
            dd.image.id,
            dd.image.name,
            device_types,
            external_url,
        )
        if if_none_match and (tag := self._tags.unchanged(content, if_none_match, now)):
            return Unchanged(tag)
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
            device_types=device_types,
            source=link,
            tag=self._tags.tag(content, link.expire),
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
        await change_status(self._store, tenant_id, dd, new, substate=substate, reported=True)

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
