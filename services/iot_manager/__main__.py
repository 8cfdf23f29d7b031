"""`python -m services.iot_manager`: serve iot-manager on its configured address."""

from __future__ import annotations

from common.web.app import serve
from services.iot_manager.config import Settings
from services.iot_manager.main import create_app

if __name__ == "__main__":
    serve(create_app, Settings())
