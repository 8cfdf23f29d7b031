"""The use-cases of devicemonitor."""

from services.devicemonitor.app.alerts import AlertsApp
from services.devicemonitor.app.telemetry import Range, TelemetryApp

__all__ = ["AlertsApp", "Range", "TelemetryApp"]
