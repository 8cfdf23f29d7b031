"""Audit events of operators' changes to artifacts, releases and deployments.

Each is written into the outbox with the change it records (the stores take them as
`effects`); a change made by no operator (a device, a peer) records none.
"""

from __future__ import annotations

from datetime import UTC, datetime

from common.core.audit import Actor, AuditObject, audit_event
from common.core.outbox import Effect
from services.deployments.models import Artifact, Deployment

__all__ = ["artifact_audit", "deployment_audit", "release_audit"]


def _event(
    tenant_id: str, actor: Actor | None, action: str, target: AuditObject, change: str = ""
) -> list[Effect]:
    if actor is None:
        return []
    when = datetime.now(UTC)
    event = audit_event(
        tenant_id, actor=actor, action=action, object_=target, change=change, when=when
    )
    return [event]


def artifact_audit(
    tenant_id: str, actor: Actor | None, action: str, artifact: Artifact
) -> list[Effect]:
    """An artifact uploaded, generated or deleted; it shows by its name."""
    target = AuditObject.named("artifact", artifact.id, artifact.name)
    return _event(tenant_id, actor, action, target)


def release_audit(tenant_id: str, actor: Actor | None, name: str, change: str) -> list[Effect]:
    """A release's notes or tags changed."""
    return _event(tenant_id, actor, "update", AuditObject.named("release", name, name), change)


def deployment_audit(
    tenant_id: str, actor: Actor | None, action: str, deployment: Deployment
) -> list[Effect]:
    """A deployment created or aborted; it shows by its name and its artifact's."""
    target = AuditObject.named(
        "deployment", deployment.id, deployment.name, artifact_name=deployment.artifact_name
    )
    return _event(tenant_id, actor, action, target)
