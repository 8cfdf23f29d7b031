"""Request ids: the id of the request being handled, kept in a contextvar.

`common.web.app`'s middleware reads or creates it per request and echoes it on the response;
log lines, error bodies and calls to peers carry it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

__all__ = ["REQUEST_ID_HEADER", "current_request_id", "request_id_var"]

REQUEST_ID_HEADER: Final = "X-MEN-RequestID"

request_id_var: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    """Return the id of the request being handled, or an empty string outside one."""
    return request_id_var.get()
