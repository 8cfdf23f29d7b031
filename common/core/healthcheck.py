"""`python -m common.core.healthcheck [--insecure] URL`: exit 0 when URL answers 2xx, else 1
with the reason.

The container health check of every Fleetport process (the image has Python, not curl):
docker-compose.yml runs it against each service's internal health endpoint and the
gateway's `/status`. `--insecure` accepts any certificate: the gateway's own check over
loopback, whose certificate names the public host (or is self-signed). Only the standard
library, so that it starts in a few milliseconds.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Final

__all__ = ["main", "problem"]

# Below compose's own health-check timeout, so that the reason is printed, not cut off.
_TIMEOUT: Final = 3.0


def problem(url: str, *, timeout: float = _TIMEOUT, verify: bool = True) -> str | None:
    """Why `url` is not healthy (no 2xx answer to a GET within `timeout` s), or None."""
    context = None
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            status: int = response.status
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} is unreachable: {getattr(exc, 'reason', exc)}"
    return None if 200 <= status < 300 else f"{url} answered {status}"


def main(argv: Sequence[str]) -> int:
    """Check the one URL given; the exit status of the health check."""
    args = list(argv)
    verify = "--insecure" not in args
    args = [a for a in args if a != "--insecure"]
    if len(args) != 1:
        sys.stderr.write("usage: python -m common.core.healthcheck [--insecure] URL\n")
        return 2
    reason = problem(args[0], verify=verify)
    if reason is not None:
        sys.stderr.write(f"unhealthy: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
