"""`python -m services.iot_manager`: serve iot-manager with uvicorn."""

from __future__ import annotations

import uvicorn

from services.iot_manager.config import Settings
from services.iot_manager.main import create_app


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
