"""`python -m services.useradm [serve | create-user …]`."""

from __future__ import annotations

import sys

from services.useradm.cli import main

if __name__ == "__main__":
    sys.exit(main())
