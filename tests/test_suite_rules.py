"""Rules the test suite keeps about itself."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

_TESTS: Final = Path(__file__).parent
_ROOT: Final = _TESTS.parent
# The product's packages, whose modules stay short enough to read whole.
_PRODUCT: Final = ("common", "gateway", "services")
_MAX_LINES: Final = 600
# Calls that check something besides a status code (assert_error, assert_*, pytest.raises,
# polling for a condition).
_CHECKING_CALLS: Final = frozenset({"raises", "eventually", "wait_until"})


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _mentions_status_code(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "status_code" for n in ast.walk(node))


def _checks_only_a_status_code(test: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether every `assert` of a test compares a status code and nothing else checks."""
    asserts = [n for n in ast.walk(test) if isinstance(n, ast.Assert)]
    if not asserts:
        return False
    for node in ast.walk(test):
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name.startswith("assert") or name in _CHECKING_CALLS:
                return False
    return all(_mentions_status_code(a.test) for a in asserts)


def _status_only_tests() -> Iterator[str]:
    for path in sorted(_TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name.startswith("test")
                and _checks_only_a_status_code(node)
            ):
                yield f"{path.relative_to(_TESTS)}:{node.lineno} {node.name}"


def test_no_test_checks_only_a_status_code() -> None:
    # A status alone passes for the wrong reason too: check the message (assert_error) or
    # the state that must, or must not, have changed.
    assert list(_status_only_tests()) == []


def test_the_rule_sees_a_status_only_test() -> None:
    source = """
async def test_status_only(client):
    r = await client.get("/x")
    assert r.status_code == 404

async def test_with_message(client):
    r = await client.get("/x")
    assert r.status_code == 404
    assert r.json()["error"] == "not found"

async def test_with_helper(client):
    assert_error(await client.get("/x"), 404, "not found")
"""
    tests = [n for n in ast.parse(source).body if isinstance(n, ast.AsyncFunctionDef)]
    assert [t.name for t in tests if _checks_only_a_status_code(t)] == ["test_status_only"]


def _oversized_modules(root: Path, packages: tuple[str, ...]) -> Iterator[str]:
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > _MAX_LINES:
                yield f"{path.relative_to(root)}: {lines} lines"


def test_no_product_module_is_over_600_lines() -> None:
    # A module grown past this is split along a seam (see CONTRIBUTING.md), not left to grow.
    assert list(_oversized_modules(_ROOT, _PRODUCT)) == []


def test_the_rule_sees_an_oversized_module(tmp_path: Path) -> None:
    package = tmp_path / "services" / "widgets"
    package.mkdir(parents=True)
    (package / "short.py").write_text("x = 1\n" * _MAX_LINES)
    (package / "long.py").write_text("x = 1\n" * (_MAX_LINES + 1))
    assert list(_oversized_modules(tmp_path, ("services",))) == [
        f"services/widgets/long.py: {_MAX_LINES + 1} lines"
    ]
