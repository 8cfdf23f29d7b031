"""The artifact reader's structure checks, on synthetic artifacts."""

from __future__ import annotations

import gzip
import re

import pytest

from services.deployments.artifact import ArtifactError, ArtifactParser
from tests.deployments.artifact.builders import (
    APP_TYPE_INFO,
    edit_manifest,
    parse,
    parse_error,
    replace,
    sha256,
    synthetic,
)


class TestStructure:
    def test_synthetic_is_valid(self) -> None:
        meta = parse(synthetic({"a.txt": b"a"}), 3)

        assert meta.name == "synthetic"
        assert [f.name for f in meta.updates[0].files] == ["a.txt"]

    def test_two_payloads(self) -> None:
        artifact = synthetic(
            payloads=[
                (b'{"type":"app","artifact_provides":{"app.version":"1"}}', {"a.txt": b"a"}),
                (
                    b'{"type":"db","artifact_provides":{"db.version":"9"},'
                    b'"artifact_depends":{"db.engine":["pg","mysql"]},'
                    b'"clears_artifact_provides":["db.*"]}',
                    {"b.txt": b"b", "c.txt": b"c"},
                ),
            ]
        )

        meta = parse(artifact, 7)

        assert [(u.type, [f.name for f in u.files]) for u in meta.updates] == [
            ("app", ["a.txt"]),
            ("db", ["b.txt", "c.txt"]),
        ]
        assert meta.provides == {
            "artifact_name": "synthetic",
            "app.version": "1",
            "db.version": "9",
        }
        assert meta.depends == {"device_type": ["dev"], "db.engine": ["pg", "mysql"]}
        assert meta.clears_provides == ["db.*"]

    def test_payload_data_out_of_order(self) -> None:
        artifact = synthetic(
            payloads=[(APP_TYPE_INFO, {"a.txt": b"a"}), (b'{"type":"other"}', {"b.txt": b"b"})],
            edit=lambda entries: [*entries[:3], entries[4], entries[3]],
        )

        meta = parse(artifact)

        assert [(u.type, [f.name for f in u.files]) for u in meta.updates] == [
            ("app", ["a.txt"]),
            ("other", ["b.txt"]),
        ]

    def test_empty(self) -> None:
        assert parse_error(b"") == "empty artifact"

    @pytest.mark.parametrize(
        "data",
        [b"hello world", b"not a tar archive\n" * 100, gzip.compress(b"x" * 5000)],
        ids=["short", "text", "gzip"],
    )
    def test_not_a_tar(self, data: bytes) -> None:
        assert parse_error(data) == "artifact is not a tar archive"

    @pytest.mark.parametrize(
        ("version", "message"),
        [
            (b'{"format":"mender","version":4}', "unsupported artifact version: 4"),
            (b'{"format":"mender","version":1}', "unsupported artifact version: 1"),
            (b'{"format":"mender","version":"3"}', "unsupported artifact version: '3'"),
            (b'{"format":"other","version":3}', "unsupported artifact format: 'other'"),
            (b'{"format":"mender"}', "unsupported artifact version: None"),
            (b"[3]", "version file must be a JSON object"),
        ],
    )
    def test_wrong_version_file(self, version: bytes, message: str) -> None:
        assert parse_error(synthetic({"a.txt": b"a"}, version=version)) == message

    def test_version_not_utf8(self) -> None:
        message = parse_error(synthetic({"a.txt": b"a"}, version=b"\xff\xfe"))

        assert message == "version file is not valid UTF-8"

    def test_version_not_first(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=lambda entries: entries[1:])

        message = parse_error(artifact)

        assert message == "artifact does not start with a version file (found manifest)"

    def test_manifest_lies_about_checksum(self) -> None:
        wrong = sha256(b"something else")
        artifact = synthetic(
            {"a.txt": b"a", "b.txt": b"b"},
            edit=edit_manifest(
                lambda m: re.sub(r"^\w+(?=  data/0000/b.txt)", wrong, m, flags=re.M)
            ),
        )

        assert parse_error(artifact, 5) == "invalid checksum for data/0000/b.txt"

    def test_manifest_misses_payload_file(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a", "b.txt": b"b"},
            edit=edit_manifest(lambda m: re.sub(r".*data/0000/b.txt\n", "", m)),
        )

        message = parse_error(artifact)

        assert message == "data/0000.tar.gz contains b.txt, which the manifest does not list"

    def test_manifest_lists_absent_file(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"},
            edit=edit_manifest(lambda m: m + f"{sha256(b'')}  data/0000/ghost.txt\n"),
        )

        message = parse_error(artifact)

        assert message == "manifest lists files missing from the artifact: data/0000/ghost.txt"

    def test_manifest_misses_header(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=edit_manifest(lambda m: re.sub(r".*header.tar.gz\n", "", m))
        )

        assert parse_error(artifact) == "manifest does not list header.tar.gz"

    def test_manifest_misses_version(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=edit_manifest(lambda m: re.sub(r".*  version\n", "", m))
        )

        assert parse_error(artifact) == "manifest does not list version"

    def test_garbled_manifest(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=edit_manifest(lambda m: m + "nonsense\n"))

        assert parse_error(artifact) == "garbled line in manifest: 'nonsense'"

    def test_version_checksum(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=replace("version", b'{"format":"mender","version": 3}')
        )

        assert parse_error(artifact) == "invalid checksum for version"

    def test_unexpected_member(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=lambda entries: [*entries, ("extra.txt", b"surprise")]
        )

        assert parse_error(artifact) == "unexpected file extra.txt in artifact"

    def test_payload_without_header_entry(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, edit=lambda entries: [*entries, ("data/0001.tar.gz", b"")]
        )

        assert parse_error(artifact) == "data/0001.tar.gz does not belong to any payload"

    def test_duplicate_payload(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=lambda entries: [*entries, entries[-1]])

        assert parse_error(artifact) == "duplicate payload data/0000.tar.gz"

    def test_missing_header(self) -> None:
        artifact = synthetic({"a.txt": b"a"}, edit=lambda entries: entries[:2])

        assert parse_error(artifact) == "artifact has no header"

    def test_trailing_garbage(self) -> None:
        artifact = synthetic({"a.txt": b"a"}) + b"garbage"

        assert parse_error(artifact) == "artifact: unexpected data after the end of the tar"

    def test_trailing_zeros(self) -> None:
        assert parse(synthetic({"a.txt": b"a"}) + bytes(10240)).name == "synthetic"

    def test_bad_type_info(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"}, type_info=b'{"type":"app","artifact_provides":{"k":1}}'
        )

        assert parse_error(artifact) == (
            "headers/0000/type-info: artifact_provides.k must be a string"
        )

    @pytest.mark.parametrize(
        ("type_info", "message"),
        [
            (b'{"type":"app"', "headers/0000/type-info is not valid JSON (Expecting"),
            (b'{"type":"app","n":NaN}', "headers/0000/type-info is not valid JSON (NaN"),
            (b'{"type":"app","n":1e999}', "headers/0000/type-info is not valid JSON (number"),
            (
                b'{"type":"app","x":"\\ud800"}',
                "headers/0000/type-info contains an invalid unicode escape",
            ),
            (b"\xff", "headers/0000/type-info is not valid UTF-8"),
            (b"[]", "headers/0000/type-info must be a JSON object"),
            (b'{"type":5}', "headers/0000/type-info: type must be a string"),
        ],
    )
    def test_bad_type_info_json(self, type_info: bytes, message: str) -> None:
        assert parse_error(synthetic({"a.txt": b"a"}, type_info=type_info)).startswith(message)

    def test_conflicting_provides(self) -> None:
        artifact = synthetic(
            {"a.txt": b"a"},
            type_info=b'{"type":"app","artifact_provides":{"artifact_name":"other"}}',
        )

        assert parse_error(artifact) == "conflicting keys in the artifact provides: artifact_name"


class TestParserUse:
    def test_error_sticks(self) -> None:
        parser = ArtifactParser()
        with pytest.raises(ArtifactError, match="not a tar archive") as first:
            parser.feed(b"x" * 1024)
        with pytest.raises(ArtifactError) as again:
            parser.feed(b"more")
        assert again.value is first.value
        with pytest.raises(ArtifactError):
            parser.finish()

    def test_finish_once(self) -> None:
        parser = ArtifactParser()
        parser.feed(synthetic({"a.txt": b"a"}))
        parser.finish()
        with pytest.raises(RuntimeError):
            parser.finish()
        with pytest.raises(RuntimeError):
            parser.feed(b"")
