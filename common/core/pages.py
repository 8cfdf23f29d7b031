"""Page requests: a validated `page` and `per_page`, free of any web framework.

The use-cases take a `Page`; `common.web.paging` reads it from a query string and writes the
paging headers of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from common.core.errors import BadRequest

__all__ = ["DEFAULT_PER_PAGE", "MAX_PER_PAGE", "Page", "parse_page"]

DEFAULT_PER_PAGE: Final = 20
MAX_PER_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class Page:
    """A validated page request."""

    page: int
    per_page: int

    @property
    def skip(self) -> int:
        """How many items come before this page."""
        return (self.page - 1) * self.per_page


def _positive(name: str, raw: str | None, default: int, maximum: int | None = None) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f'invalid {name} query: "{raw}" is not a number') from None
    if value < 1:
        raise BadRequest(f"invalid {name} query: must be at least 1")
    if maximum is not None and value > maximum:
        raise BadRequest(f"invalid {name} query: must be at most {maximum}")
    return value


def parse_page(page: str | None, per_page: str | None) -> Page:
    """Validate raw paging values (from a query string or a JSON body)."""
    return Page(
        page=_positive("page", page, 1),
        per_page=_positive("per_page", per_page, DEFAULT_PER_PAGE, MAX_PER_PAGE),
    )
