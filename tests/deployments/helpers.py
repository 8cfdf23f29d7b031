"""Helpers of the deployments tests: tokens, real artifacts, multipart bodies."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from common.web.routing import TENANT

__all__ = [
    "DEVICE_TYPE",
    "ArtifactFactory",
    "device_headers",
    "multipart_body",
    "run_mender_artifact",
    "user_headers",
]

DEVICE_TYPE: Final = "test-device"
_MENDER_ARTIFACT: Final = "/usr/bin/mender-artifact"


def _token(claims: dict[str, Any]) -> str:
    def part(document: dict[str, Any]) -> str:
        raw = json.dumps(document).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def user_headers(tenant: str = "", user_id: str | None = None) -> dict[str, str]:
    """Authorization of a (gateway-verified) user."""
    claims: dict[str, Any] = {"sub": user_id or str(uuid.uuid4()), "mender.user": True}
    if tenant:
        claims["mender.tenant"] = tenant
    return {"Authorization": f"Bearer {_token(claims)}"}


def device_headers(device_id: str, tenant: str = "") -> dict[str, str]:
    """Authorization of a (gateway-verified) device."""
    claims: dict[str, Any] = {"sub": device_id, "mender.device": True}
    if tenant:
        claims["mender.tenant"] = tenant
    return {"Authorization": f"Bearer {_token(claims)}"}


class ArtifactFactory:
    """Real artifacts written by `mender-artifact write module-image -T single-file`."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._cache: dict[tuple[Any, ...], bytes] = {}

    def make(
        self,
        name: str,
        device_types: Sequence[str] = (DEVICE_TYPE,),
        *,
        payload_size: int = 64,
        depends: Sequence[str] = (),
        provides: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> bytes:
        """The bytes of an artifact (cached per arguments)."""
        key = (
            name,
            tuple(device_types),
            payload_size,
            tuple(depends),
            tuple(provides),
            json.dumps(metadata, sort_keys=True),
        )
        if key in self._cache:
            return self._cache[key]
        work = self._dir / uuid.uuid4().hex
        work.mkdir()
        (work / "dest_dir").write_text("/tmp/fleetport-target\n")
        (work / "filename").write_text("payload.bin\n")
        (work / "permissions").write_text("644\n")
        (work / "payload.bin").write_bytes(random.Random(name).randbytes(payload_size))
        args = [_MENDER_ARTIFACT, "write", "module-image", "-T", "single-file", "-n", name]
        for device_type in device_types:
            args += ["-t", device_type]
        for name_file in ("dest_dir", "filename", "permissions", "payload.bin"):
            args += ["-f", str(work / name_file)]
        for item in depends:
            args += ["-d", item]
        for item in provides:
            args += ["-p", item]
        if metadata is not None:
            (work / "meta.json").write_text(json.dumps(metadata))
            args += ["-m", str(work / "meta.json")]
        out = work / "artifact.mender"
        args += ["-o", str(out)]
        subprocess.run(args, check=True, capture_output=True)
        data = out.read_bytes()
        self._cache[key] = data
        return data


async def run_mender_artifact(*args: str) -> tuple[int, str]:
    """Run the real `mender-artifact` tool; its exit status and combined output."""
    process = await asyncio.create_subprocess_exec(
        _MENDER_ARTIFACT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


def multipart_body(
    fields: Sequence[tuple[str, str]],
    file_field: str,
    content: bytes,
    *,
    filename: str = "artifact.mender",
    boundary: str = "fleetport-test-boundary",
    trailer: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with the file part last (as Mender requires)."""
    out = bytearray()
    for name, value in fields:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    out += content
    if trailer:
        out += f"\r\n--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def chunked(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    """The body in small chunks (as a chunked transfer delivers it)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


class FakeInventory:
    """A stand-in for inventory's internal API: accepted devices, their groups, searches."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, dict[str, Any]]] = {}
        self.searches: list[tuple[str, dict[str, Any]]] = []

    def add(
        self,
        device_id: str,
        *,
        tenant: str = "",
        status: str = "accepted",
        groups: Sequence[str] = (),
    ) -> None:
        """Register a device."""
        self.devices.setdefault(tenant, {})[device_id] = {
            "status": status,
            "groups": list(groups),
            "attributes": {},
        }

    def app(self) -> FastAPI:
        """The ASGI app serving the two internal endpoints deployments calls."""
        app = FastAPI()

        @app.post(f"/api/internal/v2/inventory/tenants/{TENANT}/filters/search")
        async def search(tenant_id: str, request: Request) -> JSONResponse:
            body = await request.json()
            self.searches.append((tenant_id, body))
            matches = []
            for device_id, device in sorted(self.devices.get(tenant_id, {}).items()):
                ok = True
                for term in body.get("filters", []):
                    if term["scope"] == "identity" and term["attribute"] == "status":
                        ok = ok and device["status"] == term["value"]
                    elif term["scope"] == "system" and term["attribute"] == "group":
                        ok = ok and term["value"] in device["groups"]
                    else:
                        ok = ok and device["attributes"].get(term["attribute"]) == term["value"]
                if ok:
                    matches.append({"id": device_id, "attributes": []})
            page, per_page = body.get("page", 1), body.get("per_page", 20)
            chunk = matches[(page - 1) * per_page : page * per_page]
            return JSONResponse(chunk, headers={"X-Total-Count": str(len(matches))})

        @app.get(f"/api/internal/v1/inventory/tenants/{TENANT}/devices/{{device_id}}/groups")
        async def groups(tenant_id: str, device_id: str) -> JSONResponse:
            device = self.devices.get(tenant_id, {}).get(device_id)
            if device is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse({"groups": device["groups"]})

        return app
