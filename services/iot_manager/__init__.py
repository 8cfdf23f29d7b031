"""iot-manager: integrations pushing the device lifecycle out (webhooks, AWS, Azure)."""
