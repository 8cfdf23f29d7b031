"""`python -m services.deployments`: serve the deployments app with uvicorn."""

from __future__ import annotations

import uvicorn

from services.deployments.config import Settings
from services.deployments.main import create_app


def main() -> None:
    """Run the service on the configured host and port."""
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
    )


if __name__ == "__main__":
    main()
