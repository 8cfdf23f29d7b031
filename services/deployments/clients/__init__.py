"""Typed clients of the peer services deployments calls."""

from services.deployments.clients.inventory import Inventory, InventoryClient, NoInventory

__all__ = ["Inventory", "InventoryClient", "NoInventory"]
