"""`python -m services.deviceauth`: serve deviceauth on its configured address."""

from __future__ import annotations

from common.web.app import serve
from services.deviceauth.config import Settings
from services.deviceauth.main import create_app

if __name__ == "__main__":
    serve(create_app, Settings())
