"""`python -m services.auditlogs`: serve auditlogs on its configured address."""

from __future__ import annotations

from common.web.app import serve
from services.auditlogs.config import Settings
from services.auditlogs.main import create_app

if __name__ == "__main__":
    serve(create_app, Settings())
