"""`python -m services.deviceconfig`: serve deviceconfig on its configured address."""

from __future__ import annotations

from common.web.app import serve
from services.deviceconfig.config import Settings
from services.deviceconfig.main import create_app

if __name__ == "__main__":
    serve(create_app, Settings())
