"""`python -m services.inventory`: serve the inventory with uvicorn."""

from __future__ import annotations

import uvicorn

from services.inventory.config import Settings
from services.inventory.main import create_app


def main() -> None:
    """Run the service on the configured address."""
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
    )


if __name__ == "__main__":
    main()
