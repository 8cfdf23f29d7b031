"""The facts generator: what it keeps from a spec directory and how it writes it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.contract.regenerate import main

_MANAGEMENT = """\
openapi: 3.0.0
paths:
  /api/management/v1/thing/items/{id}:
    parameters:
      - {name: id, in: path, required: true}
    get:
      parameters:
        - $ref: '#/components/parameters/RequestId'
        - {name: page, in: query}
      responses:
        200: {description: ok}
        '404':
          $ref: ../common/responses.yaml#/components/responses/NotFound
    delete:
      responses:
        '204': {description: gone}
components:
  parameters:
    RequestId: {name: X-MEN-RequestID, in: header, required: false}
"""
_INTERNAL = """\
openapi: 3.0.0
servers:
  - url: /api/internal/v1/thing
paths:
  /alive:
    get:
      responses:
        '204': {description: alive}
"""


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A spec directory of one service, plus the shared `common` documents."""
    root = tmp_path / "specs"
    (root / "common").mkdir(parents=True)
    (root / "common" / "responses.yaml").write_text(
        "components: {responses: {NotFound: {description: not found}}}\n"
    )
    (root / "thing").mkdir()
    (root / "thing" / "management_v1.yaml").write_text(_MANAGEMENT)
    (root / "thing" / "internal_v1.yaml").write_text(_INTERNAL)
    (root / "thing" / "schemas.yaml").write_text("components: {}\n")
    return root


def test_writes_one_sorted_file_per_service(
    spec_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "facts"
    main([str(spec_dir), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["thing.json"]
    text = (out / "thing.json").read_text()
    assert text == textwrap.dedent("""\
        {
        "internal_v1": [
          {"method": "GET", "path": "/api/internal/v1/thing/alive", "parameters": [], "responses": ["204"]}
        ],
        "management_v1": [
          {"method": "DELETE", "path": "/api/management/v1/thing/items/{id}", "parameters": [{"in": "path", "name": "id", "required": true}], "responses": ["204"]},
          {"method": "GET", "path": "/api/management/v1/thing/items/{id}", "parameters": [{"in": "header", "name": "X-MEN-RequestID", "required": false}, {"in": "path", "name": "id", "required": true}, {"in": "query", "name": "page", "required": false}], "responses": ["200", "404"]}
        ]
        }
        """)  # noqa: E501
    assert json.loads(text)["internal_v1"][0]["method"] == "GET"
    assert capsys.readouterr().out == f"facts of thing written to {out}\n"


def test_removes_facts_of_services_no_longer_there(spec_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "facts"
    out.mkdir()
    (out / "gone.json").write_text("{}\n")
    main([str(spec_dir), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["thing.json"]


def test_keeps_facts_written_by_hand(spec_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "facts"
    out.mkdir()
    handwritten = '{"_source": "a vendor page", "devices_v1": []}\n'
    (out / "manual.json").write_text(handwritten)
    main([str(spec_dir), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["manual.json", "thing.json"]
    assert (out / "manual.json").read_text() == handwritten


def test_refuses_a_directory_without_documents(tmp_path: Path) -> None:
    out = tmp_path / "facts"
    with pytest.raises(SystemExit, match="no service directory"):
        main([str(tmp_path), "--out", str(out)])
    assert not out.exists()
