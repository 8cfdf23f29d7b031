"""Business rules of deviceauth: no HTTP and no database driver here."""

from services.deviceauth.app.admission import Admission, Clock
from services.deviceauth.app.devauth import DevAuthApp
from services.deviceauth.app.device import DeviceAuthApp

__all__ = ["Admission", "Clock", "DevAuthApp", "DeviceAuthApp"]
