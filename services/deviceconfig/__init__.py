"""deviceconfig service: a device's desired and reported configuration, and its deployment."""
