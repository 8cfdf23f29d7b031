"""The tar reader: tar flavours through the whole reader."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime

import pytest

from tests.deployments.artifact.builders import parse, sha256, synthetic


class TestTarFlavours:
    @pytest.mark.parametrize("chunk", [1, 4096])
    @pytest.mark.parametrize(
        ("fmt", "mtime"),
        [
            (tarfile.USTAR_FORMAT, 1_700_000_000),
            (tarfile.GNU_FORMAT, 1_700_000_000),
            # pax records keep the fraction of a second
            (tarfile.PAX_FORMAT, 1_700_000_000.25),
        ],
        ids=["ustar", "gnu", "pax"],
    )
    def test_formats(self, fmt: int, mtime: float, chunk: int) -> None:
        files = {"short.txt": b"short"}
        if fmt != tarfile.USTAR_FORMAT:
            # GNU tar writes a long-name entry, pax a path record.
            files["n" * 130 + ".bin"] = b"long"
        # ustar splits a long path at a slash into its prefix field; the parser must join it
        # back to recognise the state script, which is skipped.
        script = ("scripts/" + "s" * 95, b"#!/bin/sh\n")
        artifact = synthetic(files, fmt=fmt, mtime=mtime, header_extra=[script])

        meta = parse(artifact, chunk)

        assert [(f.name, f.size, f.checksum, f.date) for f in meta.updates[0].files] == [
            (name, len(content), sha256(content), datetime.fromtimestamp(mtime, UTC))
            for name, content in sorted(files.items())
        ]
        assert meta.provides == {"artifact_name": "synthetic", "app.version": "1"}
