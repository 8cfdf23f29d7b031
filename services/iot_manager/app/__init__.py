"""The use-cases of iot-manager: integrations and device states, events and deliveries."""

from services.iot_manager.app.events import DELIVERIES, EventsApp, webhook_body
from services.iot_manager.app.integrations import IntegrationsApp

__all__ = ["DELIVERIES", "EventsApp", "IntegrationsApp", "webhook_body"]
