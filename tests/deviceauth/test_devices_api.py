"""The devices API: `POST /api/devices/v1/authentication/auth_requests`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from services.deviceauth.main import create_app
from tests.conftest import ClientFactory
from tests.deviceauth.conftest import (
    AUTH_REQUESTS,
    MGMT,
    USER,
    FakeDevice,
    PrivateKey,
    admit,
    list_devices,
    register,
    set_status,
    sign,
)
from tests.toolkit import assert_error
from tests.toolkit.devices import device_id_of, public_key_pem, signed_auth_request

KEY_KINDS = ["rsa2048", "rsa3072", "p256", "p384", "p521", "ed25519"]


def _post(client: httpx.AsyncClient, body: bytes, signature: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-MEN-Signature"] = signature
    return client.post(AUTH_REQUESTS, content=body, headers=headers)


class TestSubmitAuthRequest:
    @pytest.mark.parametrize("kind", KEY_KINDS)
    async def test_key_types_pending_then_accepted(
        self,
        kind: str,
        client: httpx.AsyncClient,
        device_key: Callable[[str], PrivateKey],
        key_dir: Path,
    ) -> None:
        device = FakeDevice(device_key(kind), {"mac": f"02:00:00:00:00:{len(kind):02x}"})
        first = await device.authenticate(client)
        assert first.status_code == 401
        assert set(first.json()) == {"error", "request_id"}
        assert first.json()["error"] == "dev auth: unauthorized"

        device_id, auth_id, token = await admit(client, device)
        claims = jwt.decode(token, _server_public(key_dir), algorithms=["RS256"])
        assert set(claims) == {
            "jti",
            "sub",
            "iss",
            "iat",
            "exp",
            "mender.device",
            "mender.plan",
            "mender.addons",
            "mender.trial",
        }
        assert claims["jti"] == auth_id
        assert claims["sub"] == device_id
        assert claims["iss"] == "Mender"
        assert claims["exp"] - claims["iat"] == 604800
        assert claims["mender.device"] is True
        assert claims["mender.plan"] == "enterprise"
        assert claims["mender.trial"] is False
        assert claims["mender.addons"] == [
            {"name": "configure", "enabled": True},
            {"name": "troubleshoot", "enabled": True},
            {"name": "monitor", "enabled": True},
        ]
        assert "kid" not in jwt.get_unverified_header(token)

    async def test_token_response_is_raw_jwt(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id, auth_id, _ = await admit(client, device)
        r = await device.authenticate(client)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/jwt"
        assert r.text.count(".") == 2
        assert r.headers["X-MEN-RequestID"]
        stored = await mongo[db_name]["tokens"].find_one({"_id": auth_id})
        assert stored is not None
        assert stored["sub"] == device_id
        assert stored["tenant_id"] == ""
        assert stored["exp"]["time"] > stored["iat"]["time"]

    async def test_first_contact_records_device_and_auth_set(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        view = await register(client, device)
        assert view["status"] == "pending"
        assert view["decommissioning"] is False
        assert "check_in_time" not in view
        [auth_set] = view["auth_sets"]
        assert auth_set["status"] == "pending"
        assert auth_set["pubkey"] == device.pubkey
        assert auth_set["identity_data"] == device.identity
        db = mongo[db_name]
        stored = await db["devices"].find_one({"_id": view["id"]})
        assert stored is not None
        canonical = '{"mac":"02:00:00:00:00:01"}'
        assert stored["id_data"] == canonical
        assert stored["id_data_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert stored["revision"] == 1
        assert stored["tenant_id"] == ""
        assert await db["auth_sets"].count_documents({"device_id": view["id"]}) == 1

    async def test_repeated_requests_keep_one_auth_set(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        for _ in range(3):
            assert (await device.authenticate(client)).status_code == 401
        [view] = await list_devices(client)
        assert len(view["auth_sets"]) == 1

    async def test_new_key_adds_auth_set_to_same_device(
        self, client: httpx.AsyncClient, device_key: Callable[[str], PrivateKey]
    ) -> None:
        identity = {"serial": "SN-1"}
        await FakeDevice(device_key("p256"), identity).authenticate(client)
        await FakeDevice(device_key("ed25519"), identity).authenticate(client)
        [view] = await list_devices(client)
        assert [a["status"] for a in view["auth_sets"]] == ["pending", "pending"]

    async def test_tenant_token_is_ignored(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        doc = json.loads(device.body())
        doc["tenant_token"] = "eyJhbGciOiJSUzI1NiJ9.eyJtZW5kZXIudGVuYW50IjoiMTIzIn0.c2ln"
        body = json.dumps(doc).encode()
        assert (await _post(client, body, sign(device.key, body))).status_code == 401
        [view] = await list_devices(client)
        assert view["identity_data"] == device.identity
        assert view["status"] == "pending"

    async def test_chunked_body(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        body = device.body()

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 50):
                yield body[i : i + 50]

        r = await client.post(
            AUTH_REQUESTS,
            content=chunks(),
            headers={"Content-Type": "application/json", "X-MEN-Signature": sign(device.key, body)},
        )
        assert r.status_code == 401
        assert r.json()["error"] == "dev auth: unauthorized"
        assert len(await list_devices(client)) == 1

    async def test_rejected_device(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await set_status(client, view["id"], view["auth_sets"][0]["id"], "rejected")
        assert r.status_code == 204
        r = await device.authenticate(client)
        assert r.status_code == 401
        assert r.json()["error"] == "dev auth: unauthorized"

    async def test_bad_signature(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        body = device.body()
        r = await _post(client, body, sign(device.key, body + b" "))
        assert r.status_code == 401
        assert r.json()["error"] == "signature verification failed"
        assert await list_devices(client) == []

    async def test_signature_by_another_key(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        body = device.body()
        r = await _post(client, body, sign(device_key("ed25519"), body))
        assert r.status_code == 401
        assert r.json()["error"] == "signature verification failed"

    async def test_signature_not_base64(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        r = await _post(client, device.body(), "not*base64!")
        assert r.status_code == 401
        assert r.json()["error"] == "signature verification failed"

    async def test_missing_signature(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        r = await _post(client, device.body(), None)
        assert r.status_code == 400
        assert r.json()["error"] == "missing request signature header"
        assert await list_devices(client) == []

    async def test_malformed_pem(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        body = json.dumps(
            {"id_data": '{"mac":"x"}', "pubkey": "-----BEGIN PUBLIC KEY-----\nnope\n"}
        ).encode()
        r = await _post(client, body, sign(device.key, body))
        assert r.status_code == 400
        assert r.json()["error"] == "invalid auth request: cannot decode public key"

    async def test_pem_with_garbage_content(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        pem = "-----BEGIN PUBLIC KEY-----\nTUlJQg==\n-----END PUBLIC KEY-----\n"
        body = json.dumps({"id_data": '{"mac":"x"}', "pubkey": pem}).encode()
        r = await _post(client, body, sign(device.key, body))
        assert r.status_code == 400
        assert "cannot decode public key" in r.json()["error"]

    async def test_unsupported_key_type(
        self, client: httpx.AsyncClient, device_key: Callable[[str], PrivateKey]
    ) -> None:
        dsa_device = FakeDevice(device_key("dsa"))
        r = await dsa_device.authenticate(client)
        assert r.status_code == 400
        assert r.json()["error"] == "invalid auth request: unsupported public key type"

    async def test_rsa_pkcs1_public_key_refused(
        self, client: httpx.AsyncClient, device_key: Callable[[str], PrivateKey]
    ) -> None:
        key = device_key("rsa2048")
        assert isinstance(key, rsa.RSAPrivateKey)
        pkcs1 = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode()
        )
        body = json.dumps({"id_data": '{"mac":"x"}', "pubkey": pkcs1}).encode()
        r = await _post(client, body, sign(key, body))
        assert r.status_code == 400

    @pytest.mark.parametrize(
        ("id_data", "message"),
        [
            ("not json", "invalid auth request: failed to parse identity data"),
            ('["a", "b"]', "invalid auth request: identity data must be a JSON object"),
            ("null", "invalid auth request: identity data must be a JSON object"),
            ('"mac"', "invalid auth request: identity data must be a JSON object"),
            ('{"n": NaN}', "invalid auth request: failed to parse identity data"),
            ('{"n": 1e400}', "invalid auth request: identity data contains a number out of"),
            ("[" * 100000 + "]" * 100000, "invalid auth request: failed to parse identity"),
        ],
    )
    async def test_id_data_not_an_object(
        self, id_data: str, message: str, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        r = await device.authenticate(client, id_data=id_data)
        assert r.status_code == 400
        assert r.json()["error"].startswith(message)
        assert await list_devices(client) == []

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            ({"pubkey": "x"}, "invalid auth request: id_data must be provided"),
            ({"id_data": "", "pubkey": "x"}, "invalid auth request: id_data must be provided"),
            ({"id_data": '{"a":1}'}, "invalid auth request: pubkey must be provided"),
            ({"id_data": {"a": 1}, "pubkey": "x"}, "failed to decode auth request: id_data must"),
            ({"id_data": '{"a":1}', "pubkey": 7}, "failed to decode auth request: pubkey must"),
            ({"id_data": '{"a":1}', "pubkey": "x", "tenant_token": 1}, "failed to decode"),
        ],
    )
    async def test_missing_or_mistyped_fields(
        self, doc: dict[str, Any], message: str, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        body = json.dumps(doc).encode()
        r = await _post(client, body, sign(device.key, body))
        assert r.status_code == 400
        assert r.json()["error"].startswith(message)

    @pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b"\xff\xfe", b'{"id_data": Infinity}'])
    async def test_body_not_json_object(
        self, body: bytes, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        r = await _post(client, body, sign(device.key, body))
        assert r.status_code == 400
        assert r.json()["error"].startswith("failed to decode auth request")
        assert r.json()["request_id"] == r.headers["X-MEN-RequestID"]

    async def test_wrong_content_type(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        body = device.body()
        r = await client.post(
            AUTH_REQUESTS,
            content=body,
            headers={"Content-Type": "text/plain", "X-MEN-Signature": sign(device.key, body)},
        )
        assert_error(r, 415, "Content-Type must be application/json")
        assert await list_devices(client) == []

    async def test_oversized_body(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        body = device.body(json.dumps({"mac": "x" * (2 * 1024 * 1024)}))
        r = await _post(client, body, sign(device.key, body))
        assert r.status_code == 413
        assert set(r.json()) == {"error", "request_id"}

    async def test_identity_spelling_does_not_matter(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        identity = {"serial": "<a&b>", "mac": "02:00", "n": 1.0, "é": "ü"}
        first = FakeDevice(device.key, identity)
        assert (await first.authenticate(client)).status_code == 401
        spelled = '{ "n" : 1.000, "\\u00e9":"\\u00fc",  "serial": "\\u003ca&b>", "mac":"02:00"}'
        assert (await first.authenticate(client, id_data=spelled)).status_code == 401
        [view] = await list_devices(client)
        assert len(view["auth_sets"]) == 1
        assert view["identity_data"] == {"mac": "02:00", "n": 1, "serial": "<a&b>", "é": "ü"}

    async def test_preauthorized_device_is_accepted_on_first_contact(
        self, client: httpx.AsyncClient, device: FakeDevice, key_dir: Path
    ) -> None:
        r = await client.post(
            f"{MGMT}/devices",
            json={"identity_data": device.identity, "pubkey": device.pubkey},
            headers=USER,
        )
        assert r.status_code == 201
        device_id = r.headers["Location"].removeprefix("devices/")
        r = await device.authenticate(client)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/jwt"
        claims = jwt.decode(r.text, options={"verify_signature": False})
        assert claims["sub"] == device_id
        [view] = await list_devices(client)
        assert view["status"] == "accepted"
        assert [a["status"] for a in view["auth_sets"]] == ["accepted"]

    async def test_preauthorized_identity_with_other_key_stays_pending(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        r = await client.post(
            f"{MGMT}/devices",
            json={"identity_data": device.identity, "pubkey": device.pubkey},
            headers=USER,
        )
        assert r.status_code == 201
        impostor = FakeDevice(device_key("ed25519"), device.identity)
        assert (await impostor.authenticate(client)).status_code == 401
        [view] = await list_devices(client)
        assert view["status"] == "preauthorized"
        assert sorted(a["status"] for a in view["auth_sets"]) == ["pending", "preauthorized"]

    async def test_device_limit_refuses_preauthorized(
        self, client: httpx.AsyncClient, device_key: Callable[[str], PrivateKey]
    ) -> None:
        r = await client.put(
            "/api/internal/v1/devauth/tenant//limits/max_devices", json={"limit": 1}
        )
        assert r.status_code == 204
        await admit(client, FakeDevice(device_key("p256"), {"mac": "one"}))
        second = FakeDevice(device_key("ed25519"), {"mac": "two"})
        r = await client.post(
            f"{MGMT}/devices",
            json={"identity_data": second.identity, "pubkey": second.pubkey},
            headers=USER,
        )
        assert r.status_code == 201
        r = await second.authenticate(client)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        r = await client.get(f"{MGMT}/devices/count", params={"status": "accepted"}, headers=USER)
        assert r.json() == {"count": 1}


def _server_public(key_dir: Path) -> rsa.RSAPublicKey:
    key = serialization.load_pem_private_key((key_dir / "rsa.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key()


class TestEd25519ServerKey:
    async def test_tokens_are_eddsa(
        self,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device: FakeDevice,
        key_dir: Path,
    ) -> None:
        app = create_app(make_settings(server_priv_key_path=key_dir / "ed25519.pem"))
        async with asgi_client(app) as client:
            _, _, token = await admit(client, device)
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
        private = serialization.load_pem_private_key(
            (key_dir / "ed25519.pem").read_bytes(), password=None
        )
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        claims = jwt.decode(token, private.public_key(), algorithms=["EdDSA"])
        assert claims["iss"] == "Mender"


class TestP224:
    async def test_p224_key_accepted(
        self, client: httpx.AsyncClient, device_key: Callable[[str], PrivateKey]
    ) -> None:
        key = device_key("p224")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        device = FakeDevice(key, {"mac": "p224"})
        _, _, token = await admit(client, device)
        assert token.count(".") == 2


class TestSimulatedDevice:
    """The device simulator of the tests and benchmarks (`tests.toolkit.devices`) signs its
    auth requests as the Mender client does, with either key type a device may hold."""

    @pytest.mark.parametrize("kind", ["rsa2048", "ed25519"])
    async def test_its_signed_request_is_accepted_and_its_tampered_one_refused(
        self, client: httpx.AsyncClient, device_key: Callable[[str], PrivateKey], kind: str
    ) -> None:
        key = device_key(kind)
        assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
        identity = {"mac": "02:00:00:00:00:42"}
        r = await client.post(
            f"{MGMT}/devices",
            json={"identity_data": identity, "pubkey": public_key_pem(key)},
            headers=USER,
        )
        assert r.status_code == 201, r.text
        body, headers = signed_auth_request(key, identity)
        # The same request with one more space: its signature no longer matches.
        r = await client.post(AUTH_REQUESTS, content=body.replace(b"\n", b" \n"), headers=headers)
        assert_error(r, 401, "signature")
        r = await client.post(AUTH_REQUESTS, content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert device_id_of(r.text) == (await list_devices(client))[0]["id"]
