"""`python -m services.deviceconfig`: serve deviceconfig with uvicorn."""

from __future__ import annotations

import uvicorn

from services.deviceconfig.config import Settings
from services.deviceconfig.main import create_app


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
