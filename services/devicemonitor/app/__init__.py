"""The use-cases of devicemonitor."""

from services.devicemonitor.app.alerts import AlertsApp

__all__ = ["AlertsApp"]
