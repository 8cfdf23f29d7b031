"""deviceconfig service: a device's desired and reported configuration, and its deployment."""

from services.deviceconfig.main import create_app

__all__ = ["create_app"]
