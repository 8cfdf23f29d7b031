"""`python -m services.deviceconnect`: serve the deviceconnect app with uvicorn."""

from __future__ import annotations

import uvicorn

from services.deviceconnect.config import Settings
from services.deviceconnect.main import create_app, server_config


def main() -> None:
    """Run the service on the configured host and port."""
    settings = Settings()
    uvicorn.Server(server_config(create_app(settings), settings)).run()


if __name__ == "__main__":
    main()
