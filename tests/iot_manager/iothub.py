"""A stand-in for Azure IoT Hub's service REST API: device identities and twins over HTTPS,
each request authorised by a shared access signature checked as the hub checks it."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote_plus

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

__all__ = ["API_VERSION", "Certificates", "HubStandIn", "make_certificates"]

API_VERSION: Final = "2021-04-12"


@dataclass(frozen=True)
class Certificates:
    """A test certificate authority and a server certificate for localhost, as files."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path) -> Certificates:
    """Create a CA and a certificate it signs for `localhost` and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test hub CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(directory / "ca.pem", directory / "hub.pem", directory / "hub.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _etag() -> str:
    return base64.b64encode(secrets.token_bytes(6)).decode()


def _unquote(etag: str | None) -> str | None:
    return etag.strip('"') if etag is not None else None


@dataclass
class HubStandIn:
    """The hub's state, and the app that serves its REST API."""

    host: str
    policy: str
    key: bytes
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    twins: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # Change the twin behind the caller's back once, right after it was read.
    race_next_twin_read: bool = False

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme != "SharedAccessSignature":
            return False
        # The token's fields are URL-encoded; the signed string holds the encoded resource.
        fields = dict(parse_qsl(token))
        if fields.get("sr") != self.host or fields.get("skn") != self.policy:
            return False
        resource = quote_plus(self.host)
        try:
            expiry = int(fields.get("se", ""))
        except ValueError:
            return False
        digest = hmac.new(self.key, f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
        expected = base64.b64encode(digest).decode()
        return expiry > time.time() and hmac.compare_digest(fields.get("sig", ""), expected)

    def set_reported(self, device_id: str, reported: dict[str, Any]) -> None:
        """What the device reports (as the device SDK would)."""
        twin = self.twins[device_id]
        twin["properties"]["reported"] = {**reported, "$metadata": {}, "$version": 2}
        twin["etag"] = _etag()

    def app(self) -> FastAPI:
        """The REST API: `/devices/{id}` and `/twins/{id}`."""
        api = FastAPI()

        @api.middleware("http")
        async def check(request: Request, call_next: Any) -> Response:
            self.requests.append((request.method, request.url.path))
            if request.headers.get("host") != self.host:
                return JSONResponse({"Message": "wrong host"}, status_code=400)
            if request.query_params.get("api-version") != API_VERSION:
                return JSONResponse({"Message": "unsupported api-version"}, status_code=400)
            if not self._authorized(request.headers.get("authorization", "")):
                return JSONResponse({"Message": "IotHubUnauthorizedAccess"}, status_code=401)
            response: Response = await call_next(request)
            return response

        @api.get("/devices/{device_id}")
        async def get_device(device_id: str) -> Response:
            device = self.devices.get(device_id)
            if device is None:
                return JSONResponse({"Message": "DeviceNotFound"}, status_code=404)
            return JSONResponse(device)

        @api.put("/devices/{device_id}")
        async def put_device(device_id: str, request: Request) -> Response:
            body = await request.json()
            current = self.devices.get(device_id)
            etag = _unquote(request.headers.get("if-match"))
            if current is not None and etag is None:
                return JSONResponse({"Message": "DeviceAlreadyExists"}, status_code=409)
            if current is not None and etag not in ("*", current["etag"]):
                return JSONResponse({"Message": "PreconditionFailed"}, status_code=412)
            keys = (current or {}).get("authentication") or {
                "type": "sas",
                "symmetricKey": {
                    "primaryKey": base64.b64encode(secrets.token_bytes(32)).decode(),
                    "secondaryKey": base64.b64encode(secrets.token_bytes(32)).decode(),
                },
            }
            device = {
                **body,
                "deviceId": device_id,
                "etag": _etag(),
                "status": body.get("status", "enabled"),
                "authentication": keys,
            }
            self.devices[device_id] = device
            if current is None:
                self.twins[device_id] = {
                    "deviceId": device_id,
                    "etag": _etag(),
                    "tags": {},
                    "properties": {
                        "desired": {"$metadata": {}, "$version": 1},
                        "reported": {"$metadata": {}, "$version": 1},
                    },
                }
            return JSONResponse(device)

        @api.delete("/devices/{device_id}")
        async def delete_device(device_id: str, request: Request) -> Response:
            current = self.devices.get(device_id)
            if current is None:
                return JSONResponse({"Message": "DeviceNotFound"}, status_code=404)
            if _unquote(request.headers.get("if-match")) not in ("*", current["etag"]):
                return JSONResponse({"Message": "PreconditionFailed"}, status_code=412)
            del self.devices[device_id]
            del self.twins[device_id]
            return Response(status_code=204)

        @api.get("/twins/{device_id}")
        async def get_twin(device_id: str) -> Response:
            twin = self.twins.get(device_id)
            if twin is None:
                return JSONResponse({"Message": "DeviceNotFound"}, status_code=404)
            response = JSONResponse(twin)
            if self.race_next_twin_read:
                self.race_next_twin_read = False
                twin["etag"] = _etag()
            return response

        @api.api_route("/twins/{device_id}", methods=["PUT", "PATCH"])
        async def update_twin(device_id: str, request: Request) -> Response:
            twin = self.twins.get(device_id)
            if twin is None:
                return JSONResponse({"Message": "DeviceNotFound"}, status_code=404)
            etag = _unquote(request.headers.get("if-match"))
            if etag is not None and etag not in ("*", twin["etag"]):
                return JSONResponse({"Message": "PreconditionFailed"}, status_code=412)
            body = await request.json()
            properties = twin["properties"]
            desired = (body.get("properties") or {}).get("desired")
            if request.method == "PUT":
                twin["tags"] = body.get("tags") or {}
                properties["desired"] = {**(desired or {}), "$metadata": {}, "$version": 2}
            else:
                twin["tags"] = {**twin["tags"], **(body.get("tags") or {})}
                properties["desired"].update(desired or {})
            twin["etag"] = _etag()
            return JSONResponse(twin)

        return api
