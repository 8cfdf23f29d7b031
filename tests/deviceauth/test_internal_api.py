"""The internal API: token verification for the gateway and the calls peers make."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pymongo import AsyncMongoClient

from common.core.mongo import Document
from common.core.tokens import load_signing_key
from services.deviceauth.main import create_app
from tests.conftest import ClientFactory
from tests.deviceauth.conftest import (
    INTERNAL,
    MGMT,
    FakeDevice,
    Records,
    admit,
    list_devices,
    register,
    user_token,
    verify,
)
from tests.toolkit import ManualClock, assert_error

TENANT_A = {"Authorization": f"Bearer {user_token('tenant-a')}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _resign(key_path: Path, token: str, **changes: Any) -> str:
    """The token's claims, changed, signed with the key at `key_path`."""
    return load_signing_key(key_path).sign({**_claims(token), **changes})


async def _check_in_effects(mongo: AsyncMongoClient[Document], db_name: str) -> list[Document]:
    return (
        await mongo[db_name]["outbox"]
        .find({"path": {"$regex": "/attribute/scope/system$"}})
        .sort("_id", 1)
        .to_list()
    )


class TestVerifyToken:
    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_valid(self, method: str, client: httpx.AsyncClient, device: FakeDevice) -> None:
        _, _, token = await admit(client, device)
        r = await verify(client, token, method)
        assert r.status_code == 200
        assert r.content == b""
        assert r.headers["X-MEN-RequestID"]

    async def test_token_without_bearer_prefix(
        self, client: httpx.AsyncClient, device: FakeDevice
    ) -> None:
        _, _, token = await admit(client, device)
        r = await client.get(f"{INTERNAL}/tokens/verify", headers={"Authorization": token})
        assert r.status_code == 200
        assert r.content == b""
        # The bare value is still checked like a bearer token.
        r = await client.get(f"{INTERNAL}/tokens/verify", headers={"Authorization": token[:-4]})
        assert_error(r, 401, "token invalid")

    async def test_no_token(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{INTERNAL}/tokens/verify")
        assert r.status_code == 401
        assert r.json()["error"] == "Authorization not present in header"
        r = await client.get(f"{INTERNAL}/tokens/verify", headers={"Authorization": "Bearer"})
        assert r.status_code == 401

    @pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "...", "e30.e30.e30"])
    async def test_malformed(self, token: str, client: httpx.AsyncClient) -> None:
        r = await verify(client, token)
        assert r.status_code == 401
        assert set(r.json()) == {"error", "request_id"}

    async def test_user_token(self, client: httpx.AsyncClient) -> None:
        r = await verify(client, user_token())
        assert r.status_code == 401
        assert r.json()["error"] == "not a device token"

    async def test_tampered_claims(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        _, _, token = await admit(client, device)
        header, _, signature = token.split(".")
        claims = _claims(token)
        claims["exp"] += 3600
        forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
        assert_error(await verify(client, forged), 401, "token invalid")

    async def test_alg_none(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        _, _, token = await admit(client, device)
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        payload = token.split(".")[1]
        assert_error(await verify(client, f"{header}.{payload}."), 401, "token invalid")

    async def test_hs256_with_the_public_key(
        self, client: httpx.AsyncClient, device: FakeDevice, key_dir: Path
    ) -> None:
        _, _, token = await admit(client, device)
        public = load_signing_key(key_dir / "rsa.pem").public_key
        secret = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input = (
            _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + token.split(".")[1]
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_error(await verify(client, f"{signing_input}.{_b64(mac)}"), 401, "token invalid")

    async def test_signed_by_unknown_key(
        self, client: httpx.AsyncClient, device: FakeDevice, key_dir: Path
    ) -> None:
        _, _, token = await admit(client, device)
        forged = _resign(key_dir / "old.pem", token)
        r = await verify(client, forged)
        assert r.status_code == 401
        assert r.json()["error"] == "token invalid"

    async def test_fallback_key(
        self,
        make_settings: Callable[..., Any],
        asgi_client: ClientFactory,
        device: FakeDevice,
        key_dir: Path,
    ) -> None:
        app = create_app(make_settings(server_fallback_priv_key_path=key_dir / "old.pem"))
        async with asgi_client(app) as client:
            device_id, _, token = await admit(client, device)
            old_token = _resign(key_dir / "old.pem", token)
            assert (await verify(client, old_token)).status_code == 200
            # New tokens are still signed with the primary key.
            primary = load_signing_key(key_dir / "rsa.pem").public_key
            assert jwt.decode(token, primary, algorithms=["RS256"])["sub"] == device_id

    async def test_expired(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        key_dir: Path,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        _, auth_id, token = await admit(client, device)
        claims = _claims(token)
        expired = _resign(key_dir / "rsa.pem", token, exp=claims["iat"] - 10)
        r = await verify(client, expired)
        assert r.status_code == 403
        assert r.json()["error"] == "token expired"
        assert await mongo[db_name]["tokens"].find_one({"_id": auth_id}) is None
        # The same token id is gone, so the fresh token is refused too.
        assert (await verify(client, token)).status_code == 401

    async def test_unknown_token_id(
        self, client: httpx.AsyncClient, device: FakeDevice, key_dir: Path
    ) -> None:
        _, _, token = await admit(client, device)
        forged = _resign(key_dir / "rsa.pem", token, jti=str(uuid.uuid4()))
        assert_error(await verify(client, forged), 401, "token invalid")

    async def test_token_id_of_another_device(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        device_key: Callable[[str], Any],
        key_dir: Path,
    ) -> None:
        _, _, token = await admit(client, device)
        other_id, _, _ = await admit(client, FakeDevice(device_key("ed25519"), {"mac": "other"}))
        forged = _resign(key_dir / "rsa.pem", token, sub=other_id)
        assert_error(await verify(client, forged), 401, "token invalid")

    async def test_claims_of_another_tenant(
        self, client: httpx.AsyncClient, device: FakeDevice, key_dir: Path
    ) -> None:
        _, _, token = await admit(client, device)
        elsewhere = _resign(key_dir / "rsa.pem", token, **{"mender.tenant": "tenant-a"})
        assert_error(await verify(client, elsewhere), 401, "token invalid")

    async def test_device_record_gone(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id, _, token = await admit(client, device)
        await mongo[db_name]["devices"].delete_one({"_id": device_id})
        assert_error(await verify(client, token), 401, "token invalid")

    async def test_check_in_time(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        clock: ManualClock,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id, _, token = await admit(client, device)
        devices = mongo[db_name]["devices"]
        first = await devices.find_one({"_id": device_id})
        assert first is not None
        assert first["check_in_time"] is not None
        [effect] = await _check_in_effects(mongo, db_name)
        assert effect["peer"] == "inventory"
        assert effect["method"] == "PATCH"
        assert effect["path"] == (
            f"/api/internal/v1/inventory/tenants//device/{device_id}/attribute/scope/system"
        )
        [attribute] = effect["body"]
        assert attribute["name"] == "check_in_time"
        assert attribute["scope"] == "system"
        assert attribute["value"].endswith("Z")

        # Within a minute nothing is written.
        assert (await verify(client, token)).status_code == 200
        again = await devices.find_one({"_id": device_id})
        assert again is not None
        assert again["check_in_time"] == first["check_in_time"]

        # Later the device's own record moves, inventory is not told yet.
        clock.advance(timedelta(minutes=2))
        assert (await verify(client, token)).status_code == 200
        later = await devices.find_one({"_id": device_id})
        assert later is not None
        assert later["check_in_time"] > first["check_in_time"]
        assert len(await _check_in_effects(mongo, db_name)) == 1

        # A day later inventory hears about it again.
        clock.advance(timedelta(hours=25))
        assert (await verify(client, token)).status_code == 200
        assert len(await _check_in_effects(mongo, db_name)) == 2


class TestDeleteTokens:
    async def test_tenant_id_required(self, client: httpx.AsyncClient) -> None:
        r = await client.delete(f"{INTERNAL}/tokens")
        assert r.status_code == 400
        assert r.json()["error"] == "tenant_id must be provided"

    async def test_of_one_device(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        device_id, _, token = await admit(client, device)
        _, _, other_token = await admit(client, FakeDevice(device_key("ed25519"), {"mac": "o"}))
        r = await client.delete(
            f"{INTERNAL}/tokens", params={"tenant_id": "", "device_id": device_id}
        )
        assert r.status_code == 204
        assert_error(await verify(client, token), 401, "token invalid")
        assert (await verify(client, other_token)).status_code == 200

    async def test_of_a_tenant(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        _, _, token = await admit(client, device)
        _, _, other_token = await admit(client, FakeDevice(device_key("ed25519"), {"mac": "o"}))
        r = await client.delete(f"{INTERNAL}/tokens", params={"tenant_id": "tenant-a"})
        assert r.status_code == 204
        assert (await verify(client, token)).status_code == 200
        r = await client.delete(f"{INTERNAL}/tokens", params={"tenant_id": ""})
        assert r.status_code == 204
        assert_error(await verify(client, token), 401, "token invalid")
        assert_error(await verify(client, other_token), 401, "token invalid")


class TestTenantLimits:
    async def test_put_get_delete(self, client: httpx.AsyncClient) -> None:
        path = f"{INTERNAL}/tenant/tenant-a/limits/max_devices"
        assert (await client.get(path)).json() == {"limit": 0}
        r = await client.put(path, json={"limit": 3})
        assert r.status_code == 204
        assert (await client.get(path)).json() == {"limit": 3}
        r = await client.get(f"{MGMT}/limits/max_devices", headers=TENANT_A)
        assert r.json() == {"limit": 3}
        assert (await client.get(f"{INTERNAL}/tenant//limits/max_devices")).json() == {"limit": 0}
        assert (await client.delete(path)).status_code == 204
        assert (await client.get(path)).json() == {"limit": 0}

    async def test_default_from_settings(
        self, make_settings: Callable[..., Any], asgi_client: ClientFactory
    ) -> None:
        async with asgi_client(create_app(make_settings(max_devices=5))) as client:
            r = await client.get(f"{INTERNAL}/tenant//limits/max_devices")
            assert r.json() == {"limit": 5}

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
    async def test_unsupported_limit(self, method: str, client: httpx.AsyncClient) -> None:
        r = await client.request(method, f"{INTERNAL}/tenant//limits/max_users", json={"limit": 1})
        assert r.status_code == 400
        assert r.json()["error"] == "unsupported limit max_users"

    @pytest.mark.parametrize(
        "body", [{"limit": -1}, {"limit": "5"}, {"limit": 1.5}, {}, [], {"limit": None}]
    )
    async def test_bad_body(self, body: Any, client: httpx.AsyncClient) -> None:
        r = await client.put(f"{INTERNAL}/tenant//limits/max_devices", json=body)
        assert r.status_code == 400
        assert set(r.json()) == {"error", "request_id"}


class TestProvisionTenant:
    async def test_created(self, client: httpx.AsyncClient) -> None:
        r = await client.post(f"{INTERNAL}/tenants", json={"tenant_id": "tenant-a"})
        assert r.status_code == 201
        assert r.content == b""

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (b"{}", "tenant_id"),
            (b"{", "failed to decode request body"),
            (b'{"tenant_id": 1}', "tenant_id"),
        ],
    )
    async def test_bad_body(self, body: bytes, fragment: str, client: httpx.AsyncClient) -> None:
        r = await client.post(
            f"{INTERNAL}/tenants", content=body, headers={"Content-Type": "application/json"}
        )
        assert_error(r, 400, fragment)


class TestTenantDevices:
    async def test_list(
        self, client: httpx.AsyncClient, device: FakeDevice, device_key: Callable[[str], Any]
    ) -> None:
        view = await register(client, device)
        r = await client.get(f"{INTERNAL}/tenants//devices")
        assert r.status_code == 200
        assert r.json() == [view]
        assert 'rel="first"' in r.headers["Link"]
        other = FakeDevice(device_key("ed25519"), {"mac": "a"})
        await client.post(
            f"{MGMT}/devices",
            json={"identity_data": other.identity, "pubkey": other.pubkey},
            headers=TENANT_A,
        )
        [only] = (await client.get(f"{INTERNAL}/tenants/tenant-a/devices")).json()
        assert only["status"] == "preauthorized"
        r = await client.get(f"{INTERNAL}/tenants//devices", params={"status": "accepted"})
        assert r.json() == []
        r = await client.get(f"{INTERNAL}/tenants//devices", params={"id": view["id"]})
        assert [d["id"] for d in r.json()] == [view["id"]]

    @pytest.mark.parametrize(
        ("params", "fragment"),
        [
            ({"status": "x"}, "filter status must be one of"),
            ({"page": "0"}, "page"),
            ({"per_page": "1000"}, "per_page"),
        ],
    )
    async def test_bad_query(
        self, params: dict[str, str], fragment: str, client: httpx.AsyncClient
    ) -> None:
        r = await client.get(f"{INTERNAL}/tenants//devices", params=params)
        assert_error(r, 400, fragment)


class TestTenantDevicesCount:
    async def test_count(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        await register(client, device)
        assert (await client.get(f"{INTERNAL}/tenants//devices/count")).json() == {"count": 1}
        r = await client.get(f"{INTERNAL}/tenants//devices/count", params={"status": "accepted"})
        assert r.json() == {"count": 0}
        r = await client.get(f"{INTERNAL}/tenants/tenant-a/devices/count")
        assert r.json() == {"count": 0}
        r = await client.get(f"{INTERNAL}/tenants//devices/count", params={"status": "x"})
        assert r.status_code == 400


class TestTenantDeviceStatus:
    async def test_status(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.get(f"{INTERNAL}/tenants//devices/{view['id']}/status")
        assert r.status_code == 200
        assert r.json() == {"status": "pending"}

    async def test_not_found(self, client: httpx.AsyncClient, device: FakeDevice) -> None:
        view = await register(client, device)
        r = await client.get(f"{INTERNAL}/tenants/tenant-a/devices/{view['id']}/status")
        assert r.status_code == 404
        assert r.json()["error"] == "device not found"


class TestDeleteDevice:
    async def test_delete(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        device_id, _, token = await admit(client, device)
        effects_before = await mongo[db_name]["outbox"].count_documents({})
        r = await client.delete(f"{INTERNAL}/tenants//devices/{device_id}")
        assert r.status_code == 204
        assert (await verify(client, token)).status_code == 401
        assert await list_devices(client) == []
        assert await mongo[db_name]["auth_sets"].count_documents({}) == 0
        assert await mongo[db_name]["tokens"].count_documents({}) == 0
        assert await mongo[db_name]["outbox"].count_documents({}) == effects_before
        r = await client.delete(f"{INTERNAL}/tenants//devices/{device_id}")
        assert r.status_code == 404


class TestUpdateDevice:
    async def test_provisioned(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        view = await register(client, device)
        path = f"{INTERNAL}/tenants//devices/{view['id']}"
        assert (await client.patch(path, json={"provisioned": True})).status_code == 204
        stored = await mongo[db_name]["devices"].find_one({"_id": view["id"]})
        assert stored is not None
        assert stored["provisioned"] is True
        assert (await client.patch(path, json={})).status_code == 204

    async def test_not_found(self, client: httpx.AsyncClient) -> None:
        r = await client.patch(f"{INTERNAL}/tenants//devices/nope", json={"provisioned": True})
        assert_error(r, 404, "device not found")
        r = await client.patch(f"{INTERNAL}/tenants//devices/nope", json={})
        assert_error(r, 404, "device not found")

    async def test_bad_body(
        self, client: httpx.AsyncClient, device: FakeDevice, device_records: Records
    ) -> None:
        view = await register(client, device)
        before = await device_records.find_one({"_id": view["id"]})
        r = await client.patch(
            f"{INTERNAL}/tenants//devices/{view['id']}", json={"provisioned": "yes"}
        )
        assert_error(r, 400, "provisioned")
        assert await device_records.find_one({"_id": view["id"]}) == before


class TestSetExternalIdentity:
    async def test_set(
        self,
        client: httpx.AsyncClient,
        device: FakeDevice,
        mongo: AsyncMongoClient[Document],
        db_name: str,
    ) -> None:
        view = await register(client, device)
        body = {"id": "hub-1", "name": "dev", "provider": "azure"}
        r = await client.put(f"{INTERNAL}/tenants//devices/{view['id']}/external", json=body)
        assert r.status_code == 204
        stored = await mongo[db_name]["devices"].find_one({"_id": view["id"]})
        assert stored is not None
        assert stored["external"] == {**body, "id_data": None}

    async def test_not_found(self, client: httpx.AsyncClient) -> None:
        body = {"id": "hub-1", "name": "dev", "provider": "azure"}
        r = await client.put(f"{INTERNAL}/tenants//devices/nope/external", json=body)
        assert_error(r, 404, "device not found")

    async def test_bad_body(
        self, client: httpx.AsyncClient, device: FakeDevice, device_records: Records
    ) -> None:
        view = await register(client, device)
        before = await device_records.find_one({"_id": view["id"]})
        r = await client.put(f"{INTERNAL}/tenants//devices/{view['id']}/external", json={"id": "x"})
        assert_error(r, 400, "name", "provider")
        assert await device_records.find_one({"_id": view["id"]}) == before


class TestHealth:
    async def test_health_and_alive(self, client: httpx.AsyncClient) -> None:
        for probe in ("health", "alive"):
            r = await client.get(f"{INTERNAL}/{probe}")
            assert r.status_code == 204
            assert r.content == b""
