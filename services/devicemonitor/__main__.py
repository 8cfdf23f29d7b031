"""`python -m services.devicemonitor`: serve devicemonitor on its configured address."""

from __future__ import annotations

from common.web.app import serve
from services.devicemonitor.config import Settings
from services.devicemonitor.main import create_app

if __name__ == "__main__":
    serve(create_app, Settings())
