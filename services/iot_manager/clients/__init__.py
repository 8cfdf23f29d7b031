"""What iot-manager calls outside: webhooks, and the device registries of the clouds."""

from __future__ import annotations

from services.iot_manager.clients.cloud import CloudConflict, CloudError, CloudRegistry
from services.iot_manager.clients.iotcore import IoTCore
from services.iot_manager.clients.iothub import IoTHub
from services.iot_manager.clients.outbound import OutboundClient, TargetRefused, proxies_from
from services.iot_manager.clients.webhook import WebhookClient
from services.iot_manager.models import AWSCredentials, Integration, SASCredentials

__all__ = [
    "CloudConflict",
    "CloudError",
    "CloudRegistry",
    "Clouds",
    "IoTCore",
    "IoTHub",
    "OutboundClient",
    "TargetRefused",
    "WebhookClient",
    "proxies_from",
]


class Clouds:
    """The cloud registry an integration reaches: IoT Hub, IoT Core, or none (webhooks)."""

    def __init__(self, hub: IoTHub, core: IoTCore) -> None:
        self._hub = hub
        self._core = core

    def registry(self, integration: Integration) -> CloudRegistry | None:
        """The integration's registry, or None for a webhook."""
        match integration.credentials:
            case SASCredentials(connection_string=connection_string):
                return self._hub.registry(connection_string)
            case AWSCredentials(aws=keys):
                return self._core.registry(keys)
        return None
