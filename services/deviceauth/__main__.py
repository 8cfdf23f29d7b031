"""`python -m services.deviceauth`: serve deviceauth on the configured address."""

from __future__ import annotations

import uvicorn

from services.deviceauth.config import Settings
from services.deviceauth.main import create_app


def main() -> None:
    """Run the service until interrupted."""
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
    )


if __name__ == "__main__":
    main()
