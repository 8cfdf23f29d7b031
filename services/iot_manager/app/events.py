"""Device lifecycle events: recorded with their deliveries, then delivered with retries.

deviceauth tells iot-manager that a device was provisioned, changed status or was
decommissioned. Each becomes an event for the tenant's integrations; the event and one
delivery per integration are stored in one transaction, and the outbox relay delivers
them: a webhook gets the event posted, a cloud registry gets the device created, enabled,
disabled or deleted. Deliveries to one integration go in order; a failed one is retried
with backoff, and every attempt's outcome is kept with the event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx

from common.core.outbox import Attempt, Effect, Outcome, outcome_of
from common.core.pages import Page
from services.iot_manager.clients import (
    CloudError,
    CloudRegistry,
    Clouds,
    TargetRefused,
    WebhookClient,
)
from services.iot_manager.models import (
    DeliveryStatus,
    DeviceEvent,
    Event,
    EventType,
    HTTPCredentials,
    Integration,
    Provider,
    WebhookTarget,
    enabled_for,
    rfc3339,
)
from services.iot_manager.store import DataStore

__all__ = ["DELIVERIES", "EventsApp", "webhook_body"]

# The outbox peer of deliveries; each integration is a lane of its own.
DELIVERIES: Final = "deliveries"
_SUCCESS: Final = range(200, 300)
# Conflicts in a cloud registry pass: the next attempt reads the registry afresh.
_CLOUD_RETRY: Final = frozenset({409, 412})
# Event ids derived from a request's idempotency key make a repeated request a no-op.
_EVENT_IDS: Final = uuid.UUID("6f1c8a52-5d0e-4f43-9b57-3c1f4b0d2a10")


def _now() -> datetime:
    # Millisecond precision: what the database keeps, so a stored event reads back equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def webhook_body(event: Event) -> bytes:
    """The JSON body a webhook receives for an event."""
    payload = {
        "id": event.id,
        "type": event.type.value,
        "data": event.data.wire(),
        "time": rfc3339(event.time),
    }
    return json.dumps(payload, separators=(",", ":")).encode()


class EventsApp:
    """Records lifecycle events for the tenant's integrations and delivers them."""

    def __init__(
        self,
        store: DataStore,
        *,
        webhooks: WebhookClient,
        clouds: Clouds,
        event_lifetime: timedelta,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._clouds = clouds
        self._lifetime = event_lifetime
        self._wake = wake

    async def provision_devices(
        self, tenant: str, devices: Sequence[DeviceEvent], *, keys: Sequence[str | None]
    ) -> None:
        """Devices were accepted for the first time: provision them everywhere; each comes
        with its idempotency key."""
        await self._record(tenant, EventType.PROVISIONED, devices, keys)

    async def decommission_device(self, tenant: str, device_id: str, *, key: str | None) -> None:
        """A device was decommissioned: remove it everywhere."""
        await self._record(tenant, EventType.DECOMMISSIONED, [DeviceEvent(id=device_id)], [key])

    async def set_device_statuses(
        self, tenant: str, status: str, devices: Sequence[tuple[str, str | None]]
    ) -> None:
        """Devices changed their admission status; each comes with its idempotency key."""
        changed = [DeviceEvent(id=device_id, status=status) for device_id, _ in devices]
        await self._record(tenant, EventType.STATUS_CHANGED, changed, [k for _, k in devices])

    async def list_events(
        self, tenant: str, *, integration_id: str | None, page: Page
    ) -> list[Event]:
        """One page of the tenant's events, newest first."""
        return await self._store.list_events(
            tenant, integration_id=integration_id, skip=page.skip, limit=page.per_page
        )

    async def delete_tenant(self, tenant: str) -> None:
        """Remove all of a tenant's data."""
        await self._store.delete_tenant(tenant)

    async def _record(
        self,
        tenant: str,
        kind: EventType,
        devices: Sequence[DeviceEvent],
        keys: Sequence[str | None],
    ) -> None:
        integrations = await self._store.list_integrations(tenant)
        if not integrations:
            return
        hooks = [i.id for i in integrations if i.provider is Provider.WEBHOOK]
        clouds = [i.id for i in integrations if i.provider is not Provider.WEBHOOK]
        linked: dict[str, tuple[str, ...]] = {}
        if clouds and kind is not EventType.PROVISIONED:
            found = await self._store.get_devices(tenant, [d.id for d in devices])
            linked = {d.id: d.integration_ids for d in found}
        now = _now()
        events: list[Event] = []
        for device, key in zip(devices, keys, strict=True):
            # A cloud hears about a device it was provisioned to; a webhook about any.
            if kind is EventType.PROVISIONED:
                targets = hooks + clouds
            else:
                targets = hooks + [i for i in clouds if i in linked.get(device.id, ())]
            if targets:
                event_id = _event_id(key, kind, device.id)
                events.append(
                    Event(
                        id=event_id,
                        type=kind,
                        data=device,
                        time=now,
                        integration_ids=tuple(targets),
                    )
                )
        link = {d.id: clouds for d in devices} if clouds and kind is EventType.PROVISIONED else {}
        unlink = [d.id for d in devices] if kind is EventType.DECOMMISSIONED else []
        if not (events or unlink):
            return
        # A list may repeat some items (a redelivery merged with new ones): only the events
        # not recorded yet are. The second round covers a repeat recorded meanwhile.
        for _ in range(2):
            known = await self._store.known_events(tenant, [e.id for e in events])
            fresh = [e for e in events if e.id not in known]
            if events and not fresh:
                return
            effects = [_delivery(tenant, e.id, t) for e in fresh for t in e.integration_ids]
            recorded = await self._store.record_events(
                tenant,
                fresh,
                expire_ts=now + self._lifetime,
                link=link,
                unlink=unlink,
                effects=effects,
            )
            if recorded:
                self._wake()
                return

    async def deliver(self, effect: Mapping[str, Any]) -> Attempt:
        """Deliver one event to one integration and record how it went (an outbox sender)."""
        body = effect["body"]
        tenant = body["tenant_id"]
        integration = await self._store.get_integration(tenant, body["integration_id"])
        event = await self._store.get_event(tenant, body["event_id"])
        if integration is None or event is None:
            return Attempt(Outcome.DONE, "the event or its integration no longer exists")
        registry = self._clouds.registry(integration)
        if registry is not None:
            status, outcome = await self._apply(integration, registry, event)
        else:
            assert isinstance(integration.credentials, HTTPCredentials)  # the only other kind
            status, outcome = await self._post(integration.id, integration.credentials.http, event)
        await self._store.add_delivery_status(tenant, event.id, status)
        if outcome is Outcome.REFUSED:
            # Final: the event's log records the refusal; nothing is left to deliver.
            outcome = Outcome.DONE
        return Attempt(outcome, status.error or "")

    async def _post(
        self, integration_id: str, target: WebhookTarget, event: Event
    ) -> tuple[DeliveryStatus, Outcome]:
        """Post the event to a webhook."""
        try:
            response = await self._webhooks.post(target, webhook_body(event))
        except TargetRefused as exc:
            return _failed(integration_id, str(exc)), Outcome.REFUSED
        except httpx.HTTPError as exc:
            return _failed(integration_id, f"{type(exc).__name__}: {exc}"), Outcome.RETRY
        code = response.status_code
        outcome = outcome_of(code, _SUCCESS)
        if outcome is Outcome.DONE:
            return DeliveryStatus(
                integration_id=integration_id, success=True, status_code=code
            ), outcome
        error = f"client: unexpected status code from API: {code}"
        return _failed(integration_id, error, code), outcome

    async def _apply(
        self, integration: Integration, registry: CloudRegistry, event: Event
    ) -> tuple[DeliveryStatus, Outcome]:
        """Mirror the event in a cloud registry."""
        device_id = event.data.id
        try:
            if event.type is EventType.PROVISIONED:
                await registry.provision(device_id, enabled=True)
            elif event.type is EventType.STATUS_CHANGED:
                await registry.set_enabled(device_id, enabled=enabled_for(event.data.status))
            else:
                await registry.remove(device_id)
        except TargetRefused as exc:
            return _failed(integration.id, str(exc)), Outcome.REFUSED
        except CloudError as exc:
            if exc.status is None or exc.status in _CLOUD_RETRY:
                outcome = Outcome.RETRY
            else:
                outcome = outcome_of(exc.status, ())
            return _failed(integration.id, str(exc), exc.status), outcome
        return DeliveryStatus(integration_id=integration.id, success=True), Outcome.DONE


def _failed(integration_id: str, error: str, code: int | None = None) -> DeliveryStatus:
    return DeliveryStatus(
        integration_id=integration_id, success=False, status_code=code, error=error
    )


def _event_id(key: str | None, kind: EventType, device_id: str) -> str:
    if key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_EVENT_IDS, f"{key}/{kind.value}/{device_id}"))


def _delivery(tenant: str, event_id: str, integration_id: str) -> Effect:
    return Effect(
        peer=DELIVERIES,
        method="POST",
        path=f"/events/{event_id}",
        body={"tenant_id": tenant, "event_id": event_id, "integration_id": integration_id},
        lane=integration_id,
    )
