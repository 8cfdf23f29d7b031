"""deviceconfig's use-cases."""

from services.deviceconfig.app.configurations import DeviceConfigApp

__all__ = ["DeviceConfigApp"]
