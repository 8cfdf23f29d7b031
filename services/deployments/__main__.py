"""`python -m services.deployments`: serve deployments on its configured address."""

from __future__ import annotations

from common.web.app import serve
from services.deployments.config import Settings
from services.deployments.main import create_app

if __name__ == "__main__":
    serve(create_app, Settings())
