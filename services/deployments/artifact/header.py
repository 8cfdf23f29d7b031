"""The artifact's headers: `header.tar*` and `header-augment.tar*`, unpacked and read.

A header tar holds `header-info` first, then for each payload `headers/NNNN/type-info` and
`headers/NNNN/meta-data` (version 2: `files`) and state scripts, which are skipped. Every file
is small JSON, checked for shape here; the whole tar is capped once decompressed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from services.deployments.artifact.compression import Output, decoder_for
from services.deployments.artifact.errors import ArtifactError
from services.deployments.artifact.json_checks import (
    depends_map,
    json_object,
    load_json,
    optional_string,
    optional_string_list,
    string_list,
    string_map,
)
from services.deployments.artifact.payload import Payload
from services.deployments.artifact.tar import TarMember, TarStream

__all__ = ["Header", "read_augment_header", "read_header", "unpack_header"]

_HEADER_PATH: Final = re.compile(r"headers/([0-9]+)/(.+)")


@dataclass(slots=True)
class Header:
    """What `header-info` declares: name, device types, provides, depends and payloads."""

    name: str = ""
    device_types: list[str] = field(default_factory=list)
    provides: dict[str, str] = field(default_factory=dict)
    depends: dict[str, Any] = field(default_factory=dict)
    payloads: list[Payload] = field(default_factory=list)


def unpack_header(raw: bytes, label: str, suffix: str, *, limit: int) -> list[tuple[str, bytes]]:
    """The files of a (compressed) header tar in order, scripts without their content."""
    files = _HeaderFiles(label, limit)
    tar = TarStream(files, label)
    decoder = decoder_for(suffix, files.count_then(tar.feed), label)
    decoder.feed(memoryview(raw))
    decoder.close()
    tar.close()
    return files.files


def read_header(
    label: str, files: list[tuple[str, bytes]], *, version: int, listed: list[tuple[int, str]]
) -> Header:
    """Read `header.tar*`; `listed` are the manifest's payload files as (index, name)."""
    info = _header_info(label, files, "header-info")
    header = _header_info_v3(info) if version == 3 else _header_info_v2(info)
    payloads = header.payloads
    not_scripts = [(path, raw) for path, raw in files[1:] if not path.startswith("scripts/")]
    for payload, path, rest, raw in _payload_files(label, not_scripts, payloads):
        if rest == "type-info":
            payload.type_info = _type_info(raw, path)
        elif rest == "meta-data":
            payload.meta_data = _meta_data(raw, path)
        elif rest == "files" and version == 2:
            declared = json_object(load_json(raw, path), path).get("files")
            names = string_list(declared, f"{path}: files")
            payload.files_list = [item.rsplit("/", 1)[-1] for item in names]
        elif not rest.startswith(("signatures/", "scripts/", "checksums/")):
            # Rootfs headers may carry those; Mender reads none of them.
            raise ArtifactError(f"{label}: unsupported file {path}")
    if version == 3:
        for index, payload in enumerate(payloads):
            if payload.type_info is None:
                raise ArtifactError(f"{label}: missing headers/{index:04d}/type-info")
    for index, name in listed:
        _payload_for(payloads, index, name, "manifest").manifest_files.append(name)
    for payload in payloads:
        payload.allowed_files.update(payload.listed_files(version))
    return header


def read_augment_header(
    label: str,
    files: list[tuple[str, bytes]],
    *,
    payloads: list[Payload],
    listed: list[tuple[int, str]],
) -> None:
    """Read `header-augment.tar*` into the payloads; `listed` is from `manifest-augment`."""
    info = _header_info(label, files, f"{label}: header-info")
    entries = info.get("payloads")
    if not isinstance(entries, list):
        raise ArtifactError(f"{label}: header-info.payloads must be a list")
    if len(entries) > len(payloads):
        raise ArtifactError(f"{label} describes more payloads than the header")
    for index, entry in enumerate(entries):
        entry_obj = json_object(entry, f"{label}: header-info.payloads[{index}]")
        payloads[index].augment_header_type = optional_string(
            entry_obj.get("type"), f"{label}: header-info.payloads[{index}].type"
        )
    for payload, path, rest, raw in _payload_files(label, files[1:], payloads):
        if rest == "type-info":
            payload.augment_type_info = _type_info(raw, f"{label}: {path}")
        elif rest == "meta-data":
            payload.augment_meta_data = _meta_data(raw, f"{label}: {path}")
        else:
            raise ArtifactError(f"{label}: unsupported file {path}")
    for index, name in listed:
        _payload_for(payloads, index, name, "manifest-augment").allowed_files.add(name)


def _header_info(label: str, files: list[tuple[str, bytes]], json_label: str) -> dict[str, Any]:
    if not files or files[0][0] != "header-info":
        raise ArtifactError(f"{label} does not start with header-info")
    return json_object(load_json(files[0][1], json_label), "header-info")


def _header_info_v3(info: dict[str, Any]) -> Header:
    header = Header(payloads=_payloads(info, "payloads"))
    provides = json_object(info.get("artifact_provides"), "header-info.artifact_provides")
    name = provides.get("artifact_name")
    if not isinstance(name, str) or not name:
        raise ArtifactError("header-info: missing artifact_provides.artifact_name")
    group = optional_string(
        provides.get("artifact_group"), "header-info.artifact_provides.artifact_group"
    )
    depends = json_object(info.get("artifact_depends"), "header-info.artifact_depends")
    devices = string_list(depends.get("device_type"), "header-info.device_type")
    if not devices:
        raise ArtifactError("header-info: missing artifact_depends.device_type")
    header.name = name
    header.device_types = devices
    # NOTE: Mender marshals the header structs, so only their known keys take part,
    # and the optional ones only when non-empty.
    header.provides = {"artifact_name": name}
    if group:
        header.provides["artifact_group"] = group
    depends_on_names = optional_string_list(
        depends.get("artifact_name"), "header-info.artifact_depends.artifact_name"
    )
    depends_on_groups = optional_string_list(
        depends.get("artifact_group"), "header-info.artifact_depends.artifact_group"
    )
    if depends_on_names:
        header.depends["artifact_name"] = depends_on_names
    header.depends["device_type"] = devices
    if depends_on_groups:
        header.depends["artifact_group"] = depends_on_groups
    return header


def _header_info_v2(info: dict[str, Any]) -> Header:
    header = Header(payloads=_payloads(info, "updates"))
    name = info.get("artifact_name")
    if not isinstance(name, str) or not name:
        raise ArtifactError("header-info: missing artifact_name")
    devices = string_list(
        info.get("device_types_compatible"), "header-info.device_types_compatible"
    )
    if not devices:
        raise ArtifactError("header-info: missing device_types_compatible")
    header.name = name
    header.device_types = devices
    return header


def _payloads(info: dict[str, Any], key: str) -> list[Payload]:
    entries = info.get(key)
    if not isinstance(entries, list):
        raise ArtifactError(f"header-info.{key} must be a list")
    payloads = []
    for index, entry in enumerate(entries):
        label = f"header-info.{key}[{index}]"
        payload_type = optional_string(json_object(entry, label).get("type"), f"{label}.type")
        payloads.append(Payload(header_type=payload_type))
    return payloads


def _payload_files(
    label: str, files: list[tuple[str, bytes]], payloads: list[Payload]
) -> Iterator[tuple[Payload, str, str, bytes]]:
    """Each `headers/NNNN/<rest>` file as (its payload, path, rest, content), each once."""
    seen: set[tuple[int, str]] = set()
    for path, raw in files:
        match = _HEADER_PATH.fullmatch(path)
        if match is None:
            raise ArtifactError(f"{label}: unexpected file {path}")
        index, rest = int(match.group(1)), match.group(2)
        if index >= len(payloads):
            raise ArtifactError(f"{label}: {path} does not belong to any payload")
        if (index, rest) in seen:
            raise ArtifactError(f"{label} contains {path} twice")
        seen.add((index, rest))
        yield payloads[index], path, rest, raw


def _payload_for(payloads: list[Payload], index: int, name: str, label: str) -> Payload:
    if index >= len(payloads):
        raise ArtifactError(f"{label} entry data/{index:04d}/{name} belongs to no payload")
    return payloads[index]


def _type_info(raw: bytes, label: str) -> dict[str, Any]:
    info = json_object(load_json(raw, label), label)
    clears = info.get("clears_artifact_provides")
    return {
        "type": optional_string(info.get("type"), f"{label}: type"),
        "artifact_provides": string_map(
            info.get("artifact_provides"), f"{label}: artifact_provides"
        ),
        "artifact_depends": depends_map(info.get("artifact_depends"), f"{label}: artifact_depends"),
        "clears_artifact_provides": (
            None if clears is None else string_list(clears, f"{label}: clears_artifact_provides")
        ),
    }


def _meta_data(raw: bytes, label: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    return json_object(load_json(raw, label), f"{label}: the top level")


class _HeaderFiles:
    """Collects the (small) files of a header tar, within the header size cap."""

    def __init__(self, label: str, limit: int) -> None:
        self._label = label
        self._limit = limit
        self._total = 0
        self.files: list[tuple[str, bytes]] = []
        self._name = ""
        self._buffer = bytearray()
        self._keep = False

    def count_then(self, feed: Output) -> Output:
        """`feed`, after counting the decompressed bytes against the cap."""

        def counted(chunk: memoryview) -> None:
            self._total += len(chunk)
            if self._total > self._limit:
                raise self._too_large()
            feed(chunk)

        return counted

    def _too_large(self) -> ArtifactError:
        return ArtifactError(f"{self._label} is too large (over {self._limit} bytes uncompressed)")

    def begin(self, member: TarMember) -> None:
        if member.kind == "dir":
            # mender-artifact writes no directories, but other tar writers do.
            self._keep = False
            return
        if member.kind != "file":
            raise ArtifactError(f"{self._label}: unexpected {member.describe()} {member.name}")
        if member.size > self._limit:
            raise self._too_large()
        self._name = member.name
        self._keep = not member.name.startswith("scripts/")
        self._buffer = bytearray()
        if not self._keep:
            self.files.append((member.name, b""))

    def data(self, chunk: memoryview) -> None:
        if self._keep:
            self._buffer += chunk

    def end(self) -> None:
        if self._keep:
            self.files.append((self._name, bytes(self._buffer)))
            self._buffer = bytearray()
            self._keep = False
