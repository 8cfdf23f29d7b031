"""What deviceauth asks of its peers, expressed as outbox effects on their internal APIs."""

from services.deviceauth.clients.effects import (
    DEPLOYMENTS,
    DEVICECONFIG,
    DEVICECONNECT,
    INVENTORY,
    decommission_effects,
    deviceconnect_disconnect,
    inventory_check_in,
    inventory_delete_device,
    inventory_identity,
    inventory_status,
    provision_effects,
)

__all__ = [
    "DEPLOYMENTS",
    "DEVICECONFIG",
    "DEVICECONNECT",
    "INVENTORY",
    "decommission_effects",
    "deviceconnect_disconnect",
    "inventory_check_in",
    "inventory_delete_device",
    "inventory_identity",
    "inventory_status",
    "provision_effects",
]
