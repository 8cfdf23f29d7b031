"""Integrations (one per tenant) and the device states their clouds keep."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from common.core.audit import Actor, AuditObject, audit_event
from common.core.outbox import Effect
from common.core.pages import Page
from services.iot_manager.app.errors import (
    CloudFailure,
    DeviceNotFound,
    DeviceStateConflict,
    IntegrationExists,
    IntegrationInUse,
    IntegrationNotFound,
    InvalidCredentials,
)
from services.iot_manager.clients import (
    CloudConflict,
    CloudError,
    CloudRegistry,
    Clouds,
    OutboundClient,
    TargetRefused,
)
from services.iot_manager.models import (
    Credentials,
    DeviceState,
    HTTPCredentials,
    Integration,
    Provider,
    SASCredentials,
    compatible,
)
from services.iot_manager.store import DataStore, DuplicateIntegration, Removal

__all__ = ["IntegrationsApp", "trusted_host"]

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def trusted_host(host: str, patterns: Sequence[str]) -> bool:
    """Whether a host (port ignored) matches a pattern, `*` standing for one label."""
    labels = host.partition(":")[0].lower().rstrip(".").split(".")
    for pattern in patterns:
        wanted = pattern.lower().split(".")
        if len(wanted) == len(labels) and all(
            w in ("*", h) for w, h in zip(wanted, labels, strict=True)
        ):
            return True
    return False


class IntegrationsApp:
    """Creates, lists and removes integrations; reads and sets device states in clouds."""

    def __init__(
        self,
        store: DataStore,
        *,
        outbound: OutboundClient,
        clouds: Clouds,
        trusted_hosts: Sequence[str],
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._outbound = outbound
        self._clouds = clouds
        self._trusted_hosts = list(trusted_hosts)
        # Called after effects were committed (the outbox relay delivers them now).
        self._notify = notify

    async def list_integrations(self, tenant: str, *, page: Page) -> list[Integration]:
        """One page of the tenant's integrations."""
        return await self._store.list_integrations(tenant, skip=page.skip, limit=page.per_page)

    async def get_integration(self, tenant: str, integration_id: str) -> Integration:
        """One integration (IntegrationNotFound)."""
        integration = await self._store.get_integration(tenant, integration_id)
        if integration is None:
            raise IntegrationNotFound()
        return integration

    async def create_integration(
        self,
        tenant: str,
        *,
        provider: Provider,
        credentials: Credentials,
        description: str,
        actor: Actor | None = None,
    ) -> Integration:
        """Register the tenant's integration (IntegrationExists when it has one)."""
        await self._check(provider, credentials)
        integration = Integration(
            id=str(uuid.uuid4()),
            provider=provider,
            credentials=credentials,
            description=description,
        )
        effects = self._audit(tenant, actor, "create", integration)
        try:
            await self._store.insert_integration(tenant, integration, effects=effects)
        except DuplicateIntegration:
            raise IntegrationExists() from None
        self._notify()
        return integration

    async def set_credentials(
        self,
        tenant: str,
        integration_id: str,
        credentials: Credentials,
        *,
        actor: Actor | None = None,
    ) -> None:
        """Replace an integration's credentials with ones of the same kind."""
        integration = await self.get_integration(tenant, integration_id)
        await self._check(integration.provider, credentials)
        effects = self._audit(tenant, actor, "update", integration, "credentials replaced")
        if not await self._store.set_credentials(
            tenant, integration_id, credentials, effects=effects
        ):
            raise IntegrationNotFound()
        self._notify()

    async def remove_integration(
        self, tenant: str, integration_id: str, *, actor: Actor | None = None
    ) -> None:
        """Remove an integration; a cloud one only when no device uses it."""
        integration = await self.get_integration(tenant, integration_id)
        removal = await self._store.remove_integration(
            tenant,
            integration_id,
            unless_in_use=integration.provider is not Provider.WEBHOOK,
            effects=self._audit(tenant, actor, "delete", integration),
        )
        if removal is Removal.IN_USE:
            raise IntegrationInUse()
        if removal is Removal.NOT_FOUND:
            raise IntegrationNotFound()
        self._notify()

    def _audit(
        self,
        tenant: str,
        actor: Actor | None,
        action: str,
        integration: Integration,
        change: str = "",
    ) -> list[Effect]:
        """The audit event of a user's change to an integration (its secrets are not told)."""
        if actor is None:
            return []
        name = integration.description or integration.provider.value
        target = AuditObject.named("integration", integration.id, name)
        event = audit_event(
            tenant, actor=actor, action=action, object_=target, change=change, when=_now()
        )
        return [event]

    async def unregister_device(self, tenant: str, device_id: str) -> None:
        """Forget which integrations a device has (the clouds are left as they are)."""
        if not await self._store.delete_device(tenant, device_id):
            raise DeviceNotFound()

    async def device_states(self, tenant: str, device_id: str) -> dict[str, DeviceState]:
        """The device's state in each cloud integration it has, by integration id."""
        device = await self._store.get_device(tenant, device_id)
        if device is None:
            raise DeviceNotFound()
        states: dict[str, DeviceState] = {}
        for integration_id in device.integration_ids:
            integration = await self._store.get_integration(tenant, integration_id)
            registry = None if integration is None else self._clouds.registry(integration)
            if registry is not None:
                states[integration_id] = await _cloud(registry.get_state(device_id))
        return states

    async def device_state(self, tenant: str, device_id: str, integration_id: str) -> DeviceState:
        """The device's state in one cloud integration."""
        registry = await self._registry(tenant, device_id, integration_id)
        return await _cloud(registry.get_state(device_id))

    async def set_device_state(
        self, tenant: str, device_id: str, integration_id: str, *, desired: Mapping[str, Any]
    ) -> DeviceState:
        """Replace the device's desired state in one cloud integration."""
        registry = await self._registry(tenant, device_id, integration_id)
        try:
            return await _cloud(registry.set_desired(device_id, desired))
        except CloudConflict:
            raise DeviceStateConflict() from None

    async def _registry(self, tenant: str, device_id: str, integration_id: str) -> CloudRegistry:
        device = await self._store.get_device(tenant, device_id)
        if device is None or integration_id not in device.integration_ids:
            raise IntegrationNotFound()
        integration = await self.get_integration(tenant, integration_id)
        registry = self._clouds.registry(integration)
        if registry is None:  # only cloud integrations are linked to devices
            raise IntegrationNotFound()
        return registry

    async def _check(self, provider: Provider, credentials: Credentials) -> None:
        """Refuse credentials of the wrong kind, or naming a host that may not be used."""
        if not compatible(provider, credentials):
            raise InvalidCredentials(
                f"'{provider.value}' incompatible with credential type '{credentials.type}'"
            )
        try:
            if isinstance(credentials, HTTPCredentials):
                await self._outbound.check(credentials.http.url)
            elif isinstance(credentials, SASCredentials):
                cs = credentials.connection_string
                for host in filter(None, (cs.host_name, cs.gateway_host_name)):
                    if not trusted_host(host, self._trusted_hosts):
                        raise InvalidCredentials(
                            f"connection string invalid: host {host!r} is not a trusted domain"
                        )
                await self._outbound.check(f"https://{cs.endpoint}/")
        except TargetRefused as exc:
            kind = "webhook URL" if isinstance(credentials, HTTPCredentials) else "IoT Hub host"
            raise InvalidCredentials(f"invalid {kind}: {exc}") from None


async def _cloud(call: Awaitable[T]) -> T:
    """Await a cloud call, its failures becoming CloudFailure (502)."""
    try:
        return await call
    except CloudConflict:
        raise
    except (CloudError, TargetRefused) as exc:
        raise CloudFailure(str(exc)) from None
