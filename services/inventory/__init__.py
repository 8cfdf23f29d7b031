"""Inventory service: device attributes by scope, groups, tags, search and statistics."""

from services.inventory.main import create_app

__all__ = ["create_app"]
