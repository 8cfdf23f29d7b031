"""How a device deployment changes status: shared by the device's reports and the operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from common.core.errors import Conflict, NotFound
from services.deployments.app.errors import DeploymentAborted, DeviceDecommissioned
from services.deployments.models import DeviceDeployment, DeviceDeploymentStatus
from services.deployments.store import DeviceDeploymentStore

__all__ = ["MAX_PENDING_WALK", "change_status"]

# How many deployments waiting for a device are looked through at most (`next`, decommission).
MAX_PENDING_WALK: Final = 1000
_CAS_ATTEMPTS: Final = 16


def _awaiting_retry(dd: DeviceDeployment) -> bool:
    """Whether a failed attempt was retried and the device has not asked for it yet."""
    return dd.attempts > 1 and dd.status is DeviceDeploymentStatus.PENDING and dd.request is None


async def change_status(
    store: DeviceDeploymentStore,
    tenant_id: str,
    dd: DeviceDeployment,
    new: DeviceDeploymentStatus,
    *,
    substate: str | None = None,
    reported: bool = False,
) -> bool:
    """Change a device deployment's status and move its count in the statistics.

    One transaction, compare-and-set on the old status: concurrent reports never count
    twice, and a crash leaves both or neither. A failure the device reports (`reported`)
    while it has retries left starts its next attempt instead: the device deployment is
    pending again and the device gets it on its next poll. Returns whether the status changed.
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
        if (
            reported
            and new is DeviceDeploymentStatus.FAILURE
            and current.attempts <= current.retries
        ):
            updated = await store.restart_device_deployment(tenant_id, current)
        else:
            updated = await store.move_device_deployment(
                tenant_id, current, status=new, substate=substate, now=datetime.now(UTC)
            )
        if updated is not None:
            return True
        current = await store.get_device_deployment(
            tenant_id, current.deployment_id, current.device_id
        )
    raise Conflict("the device deployment is being changed concurrently; retry")
