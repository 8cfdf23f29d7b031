"""Paging: `page`/`per_page` query parameters and the `Link`/`X-Total-Count` headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request, Response

from common.errors import BadRequest

__all__ = ["DEFAULT_PER_PAGE", "MAX_PER_PAGE", "Page", "PageDep", "parse_page", "set_page_headers"]

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


def _page_from_query(request: Request) -> Page:
    return parse_page(request.query_params.get("page"), request.query_params.get("per_page"))


PageDep = Annotated[Page, Depends(_page_from_query)]


def set_page_headers(
    request: Request,
    response: Response,
    page: Page,
    *,
    total: int | None = None,
    has_next: bool | None = None,
) -> None:
    """Set `Link` (first/prev/next, last when the total is known) and `X-Total-Count`."""
    if has_next is None:
        has_next = total is not None and page.page * page.per_page < total

    def link(number: int, rel: str) -> str:
        url = request.url.include_query_params(page=number, per_page=page.per_page)
        return f'<{url.path}?{url.query}>; rel="{rel}"'

    links = [link(1, "first")]
    if page.page > 1:
        links.append(link(page.page - 1, "prev"))
    if has_next:
        links.append(link(page.page + 1, "next"))
    if total is not None:
        last = max(1, -(-total // page.per_page))
        links.append(link(last, "last"))
        response.headers["X-Total-Count"] = str(total)
    response.headers["Link"] = ", ".join(links)
