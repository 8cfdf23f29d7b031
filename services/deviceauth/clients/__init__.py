"""What deviceauth asks of its peers, expressed as outbox effects on their internal APIs."""

from services.deviceauth.clients.effects import (
    DEPLOYMENTS,
    DEVICECONFIG,
    DEVICECONNECT,
    INVENTORY,
    IOT_MANAGER,
    decommission_effects,
    device_audit,
    deviceconnect_disconnect,
    dismissal_effects,
    inventory_check_in,
    inventory_identity,
    provision_effects,
    status_effects,
)

__all__ = [
    "DEPLOYMENTS",
    "DEVICECONFIG",
    "DEVICECONNECT",
    "INVENTORY",
    "IOT_MANAGER",
    "decommission_effects",
    "device_audit",
    "deviceconnect_disconnect",
    "dismissal_effects",
    "inventory_check_in",
    "inventory_identity",
    "provision_effects",
    "status_effects",
]
