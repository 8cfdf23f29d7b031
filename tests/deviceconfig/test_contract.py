"""Contract: every operation of Mender's deviceconfig API is routed, and nothing else."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Final

from services.deviceconfig.config import Settings
from services.deviceconfig.main import create_app

_OPERATIONS: Final = Path(__file__).with_name("spec_paths.json")
_METHODS: Final = frozenset({"get", "put", "post", "patch", "delete"})
_PARAM: Final = re.compile(r"\{[^}]*\}")

Operation = tuple[str, str]


def _normalize(method: str, path: str) -> Operation:
    return method.upper(), _PARAM.sub("{}", path.rstrip("/"))


def _listed(section: str) -> frozenset[Operation]:
    document = json.loads(_OPERATIONS.read_text())
    return frozenset(_normalize(method, path) for method, path in document[section])


@functools.cache
def _routed() -> frozenset[Operation]:
    # The app's own OpenAPI document lists every routed path and method.
    app = create_app(Settings(mongo_url="mongodb://127.0.0.1:1", dev_mode=True))
    return frozenset(
        _normalize(method, path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in _METHODS
    )


def test_every_operation_is_routed() -> None:
    spec = _listed("spec")
    assert len(spec) == 12
    assert sorted(spec - _routed()) == []


def test_no_route_outside_the_contract() -> None:
    assert sorted(_routed() - _listed("spec") - _listed("upstream")) == []
