"""Business rules of deviceauth: no HTTP and no database driver here."""

from services.deviceauth.app.devauth import Clock, DevAuthApp, utcnow

__all__ = ["Clock", "DevAuthApp", "utcnow"]
