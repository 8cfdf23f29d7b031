"""iot-manager: integrations that push the device lifecycle to webhooks, AWS IoT Core and
Azure IoT Hub."""
