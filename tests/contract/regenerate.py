"""Regenerate the contract facts from a directory of Mender OpenAPI documents.

    python tests/contract/regenerate.py SPEC_DIR [--out DIR]

`SPEC_DIR` holds one directory per service with one document per surface and version
(`<svc>/devices_v1.yaml`, `<svc>/management_v2.yaml`, …). For every service the script
writes `<out>/<svc>.json`: each document's operations with their method, path, parameters
(where, name, required) and response status codes, sorted, one operation a line. The tests
read only these files, so the suite needs no copy of the specifications. A file written by
hand (it has a `_source` key: the service has no OpenAPI document) is left as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = ["FACTS_DIR", "main", "service_facts", "write_facts"]

FACTS_DIR: Final = Path(__file__).with_name("specs")
_METHODS: Final = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
# A surface document is named `<surface>_v<version>.yaml`; other files hold shared schemas.
_DOCUMENT_GLOB: Final = "*_v*.yaml"

Facts = dict[str, list[dict[str, Any]]]


class _Documents:
    """Parsed YAML files by path, for following `$ref`s across them."""

    def __init__(self) -> None:
        self._loaded: dict[Path, Any] = {}

    def load(self, path: Path) -> Any:
        """The parsed document at `path` (read once)."""
        path = path.resolve()
        if path not in self._loaded:
            self._loaded[path] = yaml.safe_load(path.read_text())
        return self._loaded[path]

    def resolve(self, node: Any, where: Path) -> Any:
        """`node` itself, or what its `$ref` points at (relative to the file `where`)."""
        while isinstance(node, dict) and "$ref" in node:
            target, _, pointer = str(node["$ref"]).partition("#")
            if target:
                where = (where.parent / target).resolve()
            node = self.load(where)
            for part in filter(None, pointer.split("/")):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node


def _status_key(code: str) -> tuple[int, str]:
    return (int(code), "") if code.isdigit() else (1000, code)


def _operation(
    docs: _Documents, where: Path, method: str, path: str, item: dict[str, Any]
) -> dict[str, Any]:
    operation = item[method]
    # Parameters declared on the path apply to each operation unless it redeclares them.
    declared: dict[tuple[str, str], bool] = {}
    for raw in [*item.get("parameters", []), *operation.get("parameters", [])]:
        parameter = docs.resolve(raw, where)
        declared[(parameter["in"], parameter["name"])] = bool(parameter.get("required", False))
    return {
        "method": method.upper(),
        "path": path,
        "parameters": [
            {"in": place, "name": name, "required": required}
            for (place, name), required in sorted(declared.items())
        ],
        "responses": sorted((str(c) for c in operation.get("responses", {})), key=_status_key),
    }


def service_facts(directory: Path) -> Facts:
    """The operations of every surface document of one service's directory."""
    docs = _Documents()
    facts: Facts = {}
    for file in sorted(directory.glob(_DOCUMENT_GLOB)):
        document = docs.load(file)
        prefix = ""
        for server in document.get("servers") or []:
            url = str(server.get("url", ""))
            if url.startswith("/"):
                prefix = url.rstrip("/")
        operations = [
            _operation(docs, file, method, prefix + path, item)
            for path, item in (document.get("paths") or {}).items()
            for method in _METHODS
            if method in item
        ]
        facts[file.stem] = sorted(operations, key=lambda op: (op["path"], op["method"]))
    return facts


def _render(facts: Facts) -> str:
    # One operation a line: compact, and a changed operation is a one-line diff.
    parts = []
    for document, operations in sorted(facts.items()):
        lines = ",\n".join(f"  {json.dumps(op)}" for op in operations)
        parts.append(f"{json.dumps(document)}: [\n{lines}\n]")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _handwritten(path: Path) -> bool:
    """Whether a facts file was written by hand (it names its `_source`)."""
    try:
        return "_source" in json.loads(path.read_text())
    except ValueError:
        return False


def write_facts(spec_dir: Path, out: Path) -> list[str]:
    """Write one facts file per service directory of `spec_dir` into `out`; return the names."""
    services = sorted(
        d.name for d in spec_dir.iterdir() if d.is_dir() and any(d.glob(_DOCUMENT_GLOB))
    )
    if not services:
        raise SystemExit(f"{spec_dir}: no service directory with <surface>_v<N>.yaml documents")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.json"):
        if stale.stem not in services and not _handwritten(stale):
            stale.unlink()
    for name in services:
        (out / f"{name}.json").write_text(_render(service_facts(spec_dir / name)))
    return services


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and regenerate the facts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec_dir", type=Path, help="directory with one directory per service")
    parser.add_argument("--out", type=Path, default=FACTS_DIR, help="where the facts go")
    args = parser.parse_args(argv)
    services = write_facts(args.spec_dir, args.out)
    sys.stdout.write(f"facts of {', '.join(services)} written to {args.out}\n")


if __name__ == "__main__":
    main()
