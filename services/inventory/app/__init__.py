"""The inventory's use-cases and domain errors."""

from services.inventory.app.inventory import DEVICE_STATUSES, InventoryApp

__all__ = ["DEVICE_STATUSES", "InventoryApp"]
