"""`python -m services.inventory`: serve the inventory on its configured address."""

from __future__ import annotations

from common.web.app import serve
from services.inventory.config import Settings
from services.inventory.main import create_app

if __name__ == "__main__":
    serve(create_app, Settings())
