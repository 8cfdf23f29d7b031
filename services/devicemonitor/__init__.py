"""devicemonitor service: device alerts, the devices' monitor configuration, and telemetry."""
