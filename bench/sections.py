"""Results files with one section per run: a run replaces its own section, keeps the others."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, title: str, key: str, section: str) -> None:
    """Put `section` into the results file at `path` (created with heading `title`) between
    the markers named `key`, replacing what a previous run with that key wrote there."""
    begin, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{begin}\n{section.strip()}\n{end}"
    text = path.read_text() if path.exists() else f"# {title}\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        text = head + block + rest.partition(end)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
