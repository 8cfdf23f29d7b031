"""The use-cases of deviceconfig: desired and reported configurations, and their deployment."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from common.core.audit import Actor, AuditObject, audit_event
from common.core.errors import Conflict, ServiceError, ServiceUnavailable
from common.core.outbox import Effect
from services.deviceconfig.app.errors import (
    DeviceExists,
    DeviceNotFound,
    InvalidBody,
    UpdateControlMapForbidden,
)
from services.deviceconfig.clients import DeploymentsClient, DeviceconnectClient
from services.deviceconfig.models import Configuration, DeviceConfiguration
from services.deviceconfig.store import DataStore, DeviceIdTaken

__all__ = ["MAX_ATTRIBUTES", "MAX_LENGTH", "DeviceConfigApp", "validate_configuration"]

_log = logging.getLogger("deviceconfig")

# NOTE: Mender's limits: at most 100 keys; keys non-empty; keys and values at most 4096
# bytes; values are strings.
MAX_ATTRIBUTES: Final = 100
MAX_LENGTH: Final = 4096
_SHOWN_KEY: Final = 64
_CAS_ATTEMPTS: Final = 16
_JSON_TYPES: Final = {
    bool: "boolean",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
}


def _key_name(key: str) -> str:
    shown = key if len(key) <= _SHOWN_KEY else key[:_SHOWN_KEY] + "…"
    return json.dumps(shown, ensure_ascii=False)


def _check_count(configuration: Mapping[str, Any]) -> None:
    if len(configuration) > MAX_ATTRIBUTES:
        raise InvalidBody(f"too many configuration attributes, maximum is {MAX_ATTRIBUTES}")


def validate_configuration(raw: Mapping[str, Any]) -> Configuration:
    """Check a configuration against Mender's limits; 400 naming what is wrong."""
    _check_count(raw)
    for key, value in raw.items():
        if not key:
            raise InvalidBody("key: cannot be blank.")
        if len(key.encode()) > MAX_LENGTH:
            raise InvalidBody(
                f"key {_key_name(key)}: the length must be no more than {MAX_LENGTH} bytes."
            )
        if not isinstance(value, str):
            kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
            raise InvalidBody(
                f"value of {_key_name(key)}: invalid type: {kind}; values must be strings."
            )
        if len(value.encode()) > MAX_LENGTH:
            raise InvalidBody(
                f"value of {_key_name(key)}: the length must be no more than {MAX_LENGTH} bytes."
            )
    return dict(raw)


def _now() -> datetime:
    return datetime.now(UTC)


def _audit(
    tenant_id: str, actor: Actor | None, action: str, device_id: str, configuration: Configuration
) -> list[Effect]:
    """The audit event of a user's change (none for a peer's): the configuration is the change,
    as Mender records it."""
    if actor is None:
        return []
    change = json.dumps(configuration, ensure_ascii=False, sort_keys=True)
    event = audit_event(
        tenant_id,
        actor=actor,
        action=action,
        object_=AuditObject.device(device_id),
        change=change,
        when=_now(),
    )
    return [event]


class DeviceConfigApp:
    """Device configurations and configuration deployments.

    A peer given as None is not deployed: without deployments nothing can be deployed (503);
    without deviceconnect a device finds its deployment at its next poll.
    """

    def __init__(
        self,
        store: DataStore,
        *,
        deployments: DeploymentsClient | None,
        deviceconnect: DeviceconnectClient | None = None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._deployments = deployments
        self._deviceconnect = deviceconnect
        # Called after effects were committed (the outbox relay delivers them now).
        self._notify = notify

    # --- tenants and devices (deviceauth's effects) --------------------------------------

    async def provision_tenant(self, tenant_id: str) -> None:
        """Accept a new tenant (its devices live in the shared, tenant-keyed collection)."""
        if not tenant_id:
            raise InvalidBody("tenant_id: cannot be blank.")

    async def delete_tenant(self, tenant_id: str) -> None:
        """Forget every device of a tenant."""
        deleted = await self._store.delete_tenant(tenant_id)
        _log.info("deleted tenant %r: %d devices", tenant_id, deleted)

    async def provision_device(self, tenant_id: str, device_id: str) -> None:
        """Record a newly accepted device with an empty configuration."""
        if not device_id:
            raise InvalidBody("device_id: cannot be blank.")
        try:
            await self._store.insert_device(
                tenant_id, DeviceConfiguration(id=device_id, updated_ts=_now())
            )
        except DeviceIdTaken:
            raise DeviceExists() from None

    async def provision_devices(self, tenant_id: str, device_ids: Sequence[str]) -> None:
        """Record newly accepted devices with an empty configuration, but for those
        recorded already."""
        if not all(device_ids):
            raise InvalidBody("device_id: cannot be blank.")
        now = _now()
        devices = [DeviceConfiguration(id=d, updated_ts=now) for d in dict.fromkeys(device_ids)]
        await self._store.insert_devices(tenant_id, devices)

    async def decommission_device(self, tenant_id: str, device_id: str) -> None:
        """Forget a decommissioned device and its configuration."""
        if not await self._store.delete_device(tenant_id, device_id):
            raise DeviceNotFound()

    # --- configurations ----------------------------------------------------------------

    async def device(self, tenant_id: str, device_id: str) -> DeviceConfiguration:
        """One device's configurations, or 404."""
        device = await self._store.get_device(tenant_id, device_id)
        if device is None:
            raise DeviceNotFound()
        return device

    async def set_configuration(
        self,
        tenant_id: str,
        device_id: str,
        configuration: Mapping[str, Any],
        *,
        actor: Actor | None = None,
    ) -> None:
        """Replace the device's desired configuration (an audit event when a user does)."""
        configured = validate_configuration(configuration)
        effects = _audit(tenant_id, actor, "set_configuration", device_id, configured)
        try:
            await self._store.replace_configured(
                tenant_id, device_id, configured, now=_now(), effects=effects
            )
        except DeviceIdTaken:
            raise DeviceExists() from None
        if effects:
            self._notify()

    async def update_configuration(
        self, tenant_id: str, device_id: str, configuration: Mapping[str, Any]
    ) -> None:
        """Add or overwrite keys of the device's desired configuration, keeping the others."""
        changes = validate_configuration(configuration)
        clashed = False
        for _ in range(_CAS_ATTEMPTS):
            current = await self._store.get_device(tenant_id, device_id)
            if current is None and clashed:
                raise DeviceExists()  # the id is taken, by another tenant's device
            merged = {**(current.configured if current else {}), **changes}
            _check_count(merged)
            if current is None:
                try:
                    await self._store.insert_device(
                        tenant_id,
                        DeviceConfiguration(
                            id=device_id, configured=merged, updated_ts=_now(), revision=1
                        ),
                    )
                    return
                except DeviceIdTaken:
                    clashed = True  # written meanwhile: merge into that
            elif await self._store.update_configured(
                tenant_id, device_id, merged, now=_now(), revision=current.revision
            ):
                return
        raise Conflict("the device configuration is being changed concurrently; retry")

    async def report_configuration(
        self, tenant_id: str, device_id: str, configuration: Mapping[str, Any]
    ) -> None:
        """Record the configuration the device reports it has applied."""
        reported = validate_configuration(configuration)
        try:
            await self._store.replace_reported(tenant_id, device_id, reported, now=_now())
        except DeviceIdTaken:
            raise DeviceExists() from None

    # --- deployment ----------------------------------------------------------------------

    async def deploy(
        self,
        tenant_id: str,
        device_id: str,
        *,
        retries: int = 0,
        update_control_map: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> str:
        """Deploy the device's desired configuration; the new deployment's id."""
        device = await self.device(tenant_id, device_id)
        if update_control_map:
            raise UpdateControlMapForbidden()
        if self._deployments is None:
            raise ServiceUnavailable("deployments is not configured")
        deployment_id = str(uuid.uuid4())
        await self._deployments.create_configuration_deployment(
            tenant_id,
            deployment_id=deployment_id,
            device_id=device_id,
            name=f"configuration-{deployment_id}",
            configuration=device.configured,
            retries=retries,
        )
        effects = _audit(tenant_id, actor, "deploy_configuration", device_id, device.configured)
        if not await self._store.set_deployment_id(
            tenant_id, device_id, deployment_id, effects=effects
        ):
            raise DeviceNotFound()  # decommissioned meanwhile
        if effects:
            self._notify()
        await self._nudge(tenant_id, device_id)
        return deployment_id

    async def _nudge(self, tenant_id: str, device_id: str) -> None:
        """Ask deviceconnect to make the device check for updates now (best effort)."""
        if self._deviceconnect is None:
            return
        try:
            await self._deviceconnect.check_update(tenant_id, device_id)
        except ServiceError as exc:
            # The device still finds the deployment on its next poll.
            _log.warning("could not nudge device %s to check for updates: %s", device_id, exc)
