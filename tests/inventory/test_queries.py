"""Unit tests of the query parsing: v1 query strings, v2 search bodies, regexes, paging."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.core.errors import BadRequest
from common.core.pages import Page
from services.inventory.app.queries import (
    identity_search_query,
    list_query,
    parse_group_name,
    search_page,
    search_query,
)
from services.inventory.models import (
    AttributeRef,
    IdentitySearchParams,
    Predicate,
    Regex,
    SearchParams,
    SortKey,
)

PAGE = Page(page=2, per_page=10)


class TestListQuery:
    def test_filters_and_paging(self) -> None:
        query = list_query(
            [("page", "2"), ("mac", "eq:02:00"), ("identity/status", "accepted"), ("os", "eq")],
            PAGE,
        )
        assert query.skip == 10
        assert query.limit == 10
        assert query.predicates == (
            Predicate(AttributeRef("inventory", "mac"), "$eq", "02:00"),
            Predicate(AttributeRef("identity", "status"), "$eq", "accepted"),
            Predicate(AttributeRef("inventory", "os"), "$eq", "eq"),
        )

    def test_numbers_and_times_also_match_typed_values(self) -> None:
        query = list_query([("n", "1e3"), ("t", "2024-05-01T10:00:00Z"), ("v", "1_000")], PAGE)
        assert query.predicates == (
            Predicate(AttributeRef("inventory", "n"), "$in", ["1e3", 1000.0]),
            Predicate(
                AttributeRef("inventory", "t"),
                "$in",
                ["2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)],
            ),
            Predicate(AttributeRef("inventory", "v"), "$eq", "1_000"),
        )

    def test_first_value_of_a_repeated_key(self) -> None:
        query = list_query([("a", "1x"), ("a", "2x")], PAGE)
        assert query.predicates == (Predicate(AttributeRef("inventory", "a"), "$eq", "1x"),)

    def test_groups(self) -> None:
        query = list_query([("has_group", "false"), ("group", "g")], PAGE)
        group = AttributeRef("system", "group")
        assert query.predicates == (
            Predicate(group, "$exists", False),
            Predicate(group, "$eq", "g"),
        )

    def test_unknown_scope_matches_nothing(self) -> None:
        query = list_query([("$where/x", "1")], PAGE)
        assert query.predicates == (Predicate(AttributeRef("identity", "id"), "$in", []),)

    def test_sort(self) -> None:
        query = list_query([("sort", "a:asc,system/updated_ts,identity/id:desc")], PAGE)
        assert query.sort == (
            SortKey(AttributeRef("inventory", "a"), True),
            SortKey(AttributeRef("system", "updated_ts"), False),
            SortKey(AttributeRef("identity", "id"), False),
        )

    @pytest.mark.parametrize(
        "params", [[("sort", "a:sideways")], [("has_group", "yes")], [("a\x00b", "1")]]
    )
    def test_bad(self, params: list[tuple[str, str]]) -> None:
        with pytest.raises(BadRequest):
            list_query(params, PAGE)


class TestSearchQuery:
    def _predicate(self, op: str, value: object) -> Predicate:
        params = SearchParams.model_validate(
            {"filters": [{"scope": "inventory", "attribute": "a", "type": op, "value": value}]}
        )
        query, _ = search_query(params)
        return query.predicates[0]

    def test_numbers_become_floats(self) -> None:
        assert self._predicate("$eq", 3).value == 3.0
        assert self._predicate("$in", [1, "x", True]).value == [1.0, "x", True]

    @pytest.mark.parametrize(
        ("raw", "regex"),
        [
            ("abc", Regex("^(?:abc)")),
            ("a|b", Regex("^(?:a|b)")),
            ("/abc/i", Regex("^(?:abc)", "i")),
            ("/a.c/smi", Regex("^(?:a.c)", "ims")),
            ("/usr/bin", Regex("^(?:/usr/bin)")),  # not flags: a path
            ("/usr/", Regex("^(?:usr)")),
        ],
    )
    def test_regex(self, raw: str, regex: Regex) -> None:
        assert self._predicate("$regex", raw).value == regex

    def test_device_ids_and_text(self) -> None:
        params = SearchParams(device_ids=["a", "b"], text="Hello, World! hello")
        query, page = search_query(params)
        assert query.predicates == (Predicate(AttributeRef("identity", "id"), "$in", ["a", "b"]),)
        assert query.text_tokens == ("hello", "world")
        assert page == Page(page=1, per_page=20)

    def test_identity_search_escapes_the_prefix(self) -> None:
        params = IdentitySearchParams(scope="identity", name="mac", value_prefix="a.b*")
        query, _ = identity_search_query(params)
        assert query.predicates == (
            Predicate(AttributeRef("identity", "mac"), "$regex", Regex(r"^a\.b\*")),
        )


class TestPaging:
    def test_defaults(self) -> None:
        assert search_page(None, None) == Page(page=1, per_page=20)
        assert search_page(0, 0) == Page(page=1, per_page=20)
        assert search_page(3, 500) == Page(page=3, per_page=500)

    @pytest.mark.parametrize(("page", "per_page"), [(-1, None), (None, -5), (1, 501)])
    def test_bad(self, page: int | None, per_page: int | None) -> None:
        with pytest.raises(BadRequest):
            search_page(page, per_page)


@pytest.mark.parametrize("name", ["a", "A-z_0", "x" * 256])
def test_group_names(name: str) -> None:
    assert parse_group_name(name) == name
