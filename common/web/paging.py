"""Paging over HTTP: the `page`/`per_page` query and the `Link`/`X-Total-Count` headers.

The `Page` itself lives in `common.core.pages`, which the use-cases import without FastAPI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from common.core.pages import Page, parse_page

__all__ = ["PageDep", "set_page_headers"]


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
