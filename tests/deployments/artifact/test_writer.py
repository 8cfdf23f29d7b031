"""The artifact writer: what POST /artifacts/generate and configuration deployments serve."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from services.deployments.artifact import (
    ArtifactParser,
    PayloadFile,
    write_artifact,
    write_configuration_artifact,
    write_single_file_artifact,
)
from tests.deployments.helpers import run_mender_artifact


class TestWriter:
    async def test_single_file_artifact(self, tmp_path: Path) -> None:
        source = tmp_path / "motd"
        source.write_bytes(b"welcome\n" * 1000)
        out = io.BytesIO()
        write_single_file_artifact(
            out,
            name="motd-1",
            device_types=["a", "b"],
            source=source,
            filename="motd",
            dest_dir="/etc",
            permissions="600",
            mtime=1_700_000_000,
        )
        parser = ArtifactParser()
        parser.feed(out.getvalue())
        meta = parser.finish()
        assert meta.name == "motd-1"
        assert meta.device_types_compatible == ["a", "b"]
        assert meta.provides == {
            "artifact_name": "motd-1",
            "rootfs-image.single-file.version": "motd-1",
        }
        assert [(f.name, f.size) for f in meta.updates[0].files] == [
            ("dest_dir", 5),
            ("filename", 5),
            ("permissions", 4),
            ("motd", 8000),
        ]
        path = tmp_path / "motd.mender"
        path.write_bytes(out.getvalue())
        code, output = await run_mender_artifact("validate", str(path))
        assert code == 0, output

    def test_refuses_bad_names(self, tmp_path: Path) -> None:
        source = tmp_path / "f"
        source.write_bytes(b"x")
        with pytest.raises(ValueError, match="invalid payload file name"):
            write_single_file_artifact(
                io.BytesIO(),
                name="n",
                device_types=["a"],
                source=source,
                filename="../x",
                dest_dir="/d",
            )

    def test_configuration_artifact(self) -> None:
        configuration = {"timezone": "UTC", "ntp": {"servers": ["a", "b"]}}

        artifact = write_configuration_artifact(
            name="config-7", device_type="rpi4", configuration=configuration, mtime=1_700_000_000
        )

        parser = ArtifactParser()
        parser.feed(artifact)
        meta = parser.finish()
        assert meta.name == "config-7"
        assert meta.device_types_compatible == ["rpi4"]
        assert meta.provides == {
            "artifact_name": "config-7",
            "data-partition.mender-configure.version": "config-7",
        }
        assert meta.clears_provides == ["data-partition.mender-configure.*"]
        [update] = meta.updates
        assert (update.type, update.files, update.meta_data) == (
            "mender-configure",
            [],
            [configuration],
        )

    def test_refuses_duplicate_names(self) -> None:
        out = io.BytesIO()
        with pytest.raises(ValueError, match="payload file names must be unique"):
            write_artifact(
                out,
                name="n",
                device_types=["a"],
                payload_type="app",
                provides={},
                clears_provides=[],
                files=[PayloadFile("same", b"1"), PayloadFile("same", b"2")],
            )
        assert out.getvalue() == b""
