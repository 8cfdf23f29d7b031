"""deviceconfig's use-cases."""

from services.deviceconfig.app.configurations import (
    MAX_ATTRIBUTES,
    MAX_LENGTH,
    DeviceConfigApp,
    validate_configuration,
)

__all__ = ["MAX_ATTRIBUTES", "MAX_LENGTH", "DeviceConfigApp", "validate_configuration"]
