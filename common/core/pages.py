"""Page requests: a validated `page` and `per_page`, free of any web framework.

The use-cases take a `Page`; `common.web.paging` reads it from a query string and writes the
paging headers of the answer.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Final

from common.core.errors import BadRequest

__all__ = ["DEFAULT_PER_PAGE", "MAX_PAGE", "MAX_PER_PAGE", "Page", "parse_page"]

DEFAULT_PER_PAGE: Final = 20
MAX_PER_PAGE: Final = 500
# The database takes the number of items to skip as a signed 64-bit integer: with any page
# size up to the maximum, every page up to this one starts within that range.
MAX_PAGE: Final = (2**63 - 1) // MAX_PER_PAGE + 1


def _check_range(name: str, value: int, maximum: int) -> None:
    if value < 1:
        raise BadRequest(f"invalid {name}: must be at least 1")
    if value > maximum:
        raise BadRequest(f"invalid {name}: must be at most {maximum}")


@dataclass(frozen=True, slots=True)
class Page:
    """A page request; out-of-range values are refused (400) however the page was given.

    `from_query` only words the refusal: `invalid page query: …`, else `invalid page: …`.
    """

    page: int
    per_page: int
    from_query: InitVar[bool] = True

    def __post_init__(self, from_query: bool) -> None:
        given = " query" if from_query else ""
        _check_range(f"page{given}", self.page, MAX_PAGE)
        _check_range(f"per_page{given}", self.per_page, MAX_PER_PAGE)

    @property
    def skip(self) -> int:
        """How many items come before this page."""
        return (self.page - 1) * self.per_page


def _number(name: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f'invalid {name} query: "{raw}" is not a number') from None


def parse_page(page: str | None, per_page: str | None) -> Page:
    """Validate raw paging values from a query string."""
    return Page(
        page=_number("page", page, 1), per_page=_number("per_page", per_page, DEFAULT_PER_PAGE)
    )
