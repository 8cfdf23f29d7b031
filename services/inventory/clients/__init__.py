"""Typed clients of the peers the inventory calls."""

from services.inventory.clients.devicemonitor import DevicemonitorClient, HttpDevicemonitorClient

__all__ = ["DevicemonitorClient", "HttpDevicemonitorClient"]
