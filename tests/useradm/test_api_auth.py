"""Login, logout and the verification of user tokens (the gateway's check)."""

from __future__ import annotations

import base64
import hmac
import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import Document
from common.core.tokens import SigningKey, generate_key_file, load_signing_key
from services.useradm.main import create_app
from tests.conftest import ClientFactory
from tests.toolkit import assert_error
from tests.useradm.conftest import (
    EMAIL,
    FORWARDED,
    LOGIN,
    LOGOUT,
    PASSWORD,
    USERS,
    VERIFY,
    bearer,
    claims_of,
    create_user,
    header_of,
    login,
    make_settings,
    verify,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "jti": str(uuid.uuid4()),
        "sub": user_id,
        "iss": "mender.useradm",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "scp": "mender.*",
        "mender.user": True,
        **overrides,
    }


def _verify_rs256(token: str, key: SigningKey) -> None:
    """Check an RS256 signature independently of the code under test."""
    head, payload, sig = token.split(".")
    public = key.public_key
    assert isinstance(public, rsa.RSAPublicKey)
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    public.verify(raw, f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())


async def _store_token(db: AsyncDatabase[Document], claims: dict[str, Any]) -> None:
    """Record a token as issued, so only the property under test can refuse it."""
    await db["tokens"].insert_one(
        {
            "_id": claims["jti"],
            "sub": claims["sub"],
            "tenant_id": claims.get("mender.tenant", ""),
            "iat": datetime.now(UTC),
        }
    )


class TestLogin:
    async def test_returns_a_signed_token(
        self, client: httpx.AsyncClient, db: AsyncDatabase[Document], signing_key: SigningKey
    ) -> None:
        user_id = await create_user(client)
        before = int(time.time())

        r = await client.post(LOGIN, auth=(EMAIL, PASSWORD))

        assert r.status_code == 200
        assert r.headers["content-type"] == "application/jwt"
        assert r.headers["X-MEN-RequestID"]
        token = r.text
        assert header_of(token) == {"alg": "RS256", "kid": 1, "typ": "JWT"}
        _verify_rs256(token, signing_key)
        claims = claims_of(token)
        assert set(claims) == {
            "jti",
            "sub",
            "iss",
            "iat",
            "nbf",
            "exp",
            "scp",
            "mender.user",
            # The organization's plan, as the web UI's Enterprise mode compares them.
            "mender.plan",
            "mender.addons",
            "mender.trial",
        }
        assert claims["sub"] == user_id
        assert claims["iss"] == "mender.useradm"
        assert claims["scp"] == "mender.*"
        assert claims["mender.user"] is True
        assert claims["nbf"] == claims["iat"] >= before
        assert claims["exp"] == claims["iat"] + 604800
        assert uuid.UUID(claims["jti"]).version == 4
        stored = await db["tokens"].find_one({"_id": claims["jti"]})
        assert stored is not None
        assert stored["sub"] == user_id
        assert stored["tenant_id"] == ""
        assert "name" not in stored
        assert stored["exp"] == datetime.fromtimestamp(claims["exp"], UTC)
        user = await db["users"].find_one({"_id": user_id})
        assert user is not None
        assert user["login_ts"] >= datetime.fromtimestamp(before, UTC)

    async def test_web_ui_body_and_case_insensitive_email(self, client: httpx.AsyncClient) -> None:
        await create_user(client)
        r = await client.post(
            LOGIN,
            auth=(EMAIL.upper(), PASSWORD),
            json={"token2fa": "", "no_expiry": False},
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/jwt"
        assert "exp" in claims_of(r.text)

    async def test_cli_style_empty_json_body(self, client: httpx.AsyncClient) -> None:
        user_id = await create_user(client)
        r = await client.post(
            LOGIN,
            auth=(EMAIL, PASSWORD),
            headers={"Content-Type": "application/json", "Content-Length": "0"},
        )
        assert r.status_code == 200, r.text
        assert claims_of(r.text)["sub"] == user_id

    async def test_no_expiry(self, client: httpx.AsyncClient, db: AsyncDatabase[Document]) -> None:
        await create_user(client)
        token = await login(client, no_expiry=True)
        claims = claims_of(token)
        assert "exp" not in claims
        stored = await db["tokens"].find_one({"_id": claims["jti"]})
        assert stored is not None
        assert "exp" not in stored
        assert (await verify(client, token)).status_code == 200

    async def test_wrong_password(self, client: httpx.AsyncClient) -> None:
        await create_user(client)
        r = await client.post(LOGIN, auth=(EMAIL, "wrong-password"))
        assert_error(r, 401, "unauthorized")

    async def test_unknown_email(self, client: httpx.AsyncClient) -> None:
        r = await client.post(LOGIN, auth=("nobody@example.com", PASSWORD))
        assert_error(r, 401, "unauthorized")

    async def test_overlong_password(self, client: httpx.AsyncClient) -> None:
        await create_user(client)
        r = await client.post(LOGIN, auth=(EMAIL, PASSWORD + "x" * 100))
        assert_error(r, 401)

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "Bearer abc",
            "Basic",
            "Basic !!!not-base64!!!",
            "Basic " + base64.b64encode(b"no-colon").decode(),
            "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        ],
    )
    async def test_missing_or_malformed_basic_header(
        self, client: httpx.AsyncClient, header: str | None
    ) -> None:
        headers = {"Authorization": header} if header else {}
        r = await client.post(LOGIN, headers=headers)
        assert_error(r, 401, "invalid or missing auth header")

    async def test_malformed_json_body(self, client: httpx.AsyncClient) -> None:
        await create_user(client)
        r = await client.post(
            LOGIN,
            auth=(EMAIL, PASSWORD),
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert_error(r, 400, "failed to decode request body")

    async def test_wrong_option_type(self, client: httpx.AsyncClient) -> None:
        await create_user(client)
        r = await client.post(LOGIN, auth=(EMAIL, PASSWORD), json={"no_expiry": "yes"})
        assert_error(r, 400, "no_expiry")

    async def test_body_not_an_object(self, client: httpx.AsyncClient) -> None:
        await create_user(client)
        r = await client.post(LOGIN, auth=(EMAIL, PASSWORD), json=[1, 2])
        assert_error(r, 400)

    async def test_sessions_are_trimmed_oldest_first(
        self,
        mongo_url: str,
        db_name: str,
        key_path: Path,
        asgi_client: ClientFactory,
        db: AsyncDatabase[Document],
    ) -> None:
        settings = make_settings(mongo_url, db_name, key_path, limit_sessions_per_user=3)
        async with asgi_client(create_app(settings)) as client:
            user_id = await create_user(client)
            tokens = [await login(client) for _ in range(5)]
            pat = await client.post(
                f"{USERS.rsplit('/', 1)[0]}/settings/tokens",
                json={"name": "ci"},
                headers=bearer(tokens[-1]),
            )
            assert pat.status_code == 200
            await login(client)
            kept = {d["_id"] async for d in db["tokens"].find({"sub": user_id})}
            survivors = [t for t in tokens if claims_of(t)["jti"] in kept]
            # The newest login tokens (three) and the personal access token remain.
            assert len(kept) == 4
            assert survivors == tokens[-2:]
            assert claims_of(pat.text)["jti"] in kept
            assert (await verify(client, tokens[0])).status_code == 401
            assert (await verify(client, tokens[-1])).status_code == 200


class TestLogout:
    async def test_token_stops_verifying(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        assert (await client.get(USERS, headers=bearer(token))).status_code == 200
        assert (await verify(client, token)).status_code == 200

        r = await client.post(LOGOUT, headers=bearer(token))

        assert r.status_code == 202
        assert r.content == b""
        assert await db["tokens"].find_one({"_id": claims_of(token)["jti"]}) is None
        assert_error(await verify(client, token), 401)

    async def test_other_sessions_stay(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        other = await login(client)
        assert (await client.post(LOGOUT, headers=bearer(token))).status_code == 202
        assert_error(await verify(client, token), 401, "unauthorized")
        assert (await verify(client, other)).status_code == 200

    async def test_without_token(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.post(LOGOUT), 401)


class TestVerify:
    async def test_login_token_passes_get_and_post(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        r = await verify(client, token)
        assert r.status_code == 200
        assert r.content == b""
        assert (await verify(client, token, "POST")).status_code == 200

    async def test_jwt_cookie(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        client.cookies.set("JWT", token)
        try:
            r = await client.get(VERIFY, headers=FORWARDED)
        finally:
            client.cookies.clear()
        assert r.status_code == 200
        assert r.content == b""
        # The cookie is what carried the token.
        assert_error(
            await client.get(VERIFY, headers=FORWARDED), 401, "authorization not present in header"
        )

    async def test_no_token(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(VERIFY, headers=FORWARDED), 401)

    async def test_not_a_bearer_token(self, client: httpx.AsyncClient) -> None:
        r = await client.get(VERIFY, headers={"Authorization": "Basic eDp5", **FORWARDED})
        assert_error(r, 401, "malformed Authorization header")

    async def test_garbage_token(self, client: httpx.AsyncClient) -> None:
        assert_error(await verify(client, "not.a.jwt"), 401)
        assert_error(await verify(client, "x" * 20000), 401)

    async def test_tampered_payload(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        head, _, sig = token.split(".")
        claims = claims_of(token)
        claims["sub"] = str(uuid.uuid4())
        forged = f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
        assert_error(await verify(client, forged), 401, "invalid jwt")

    async def test_tampered_signature(
        self, client: httpx.AsyncClient, admin: tuple[str, str]
    ) -> None:
        _, token = admin
        head, payload, sig = token.split(".")
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        assert_error(await verify(client, f"{head}.{payload}.{flipped}"), 401)

    async def test_expired(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        signing_key: SigningKey,
        db: AsyncDatabase[Document],
    ) -> None:
        user_id, _ = admin
        past = int(time.time()) - 7200
        claims = _claims(user_id, iat=past, nbf=past, exp=past + 60)
        await _store_token(db, claims)
        assert_error(await verify(client, signing_key.sign(claims)), 401, "expired")

    async def test_alg_none(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        user_id, _ = admin
        claims = _claims(user_id)
        await _store_token(db, claims)
        head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": 1}).encode())
        body = _b64(json.dumps(claims).encode())
        assert_error(await verify(client, f"{head}.{body}."), 401)
        assert_error(await verify(client, f"{head}.{body}.c2ln"), 401)

    async def test_hs256_signed_with_the_public_key(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        signing_key: SigningKey,
        db: AsyncDatabase[Document],
    ) -> None:
        user_id, _ = admin
        claims = _claims(user_id)
        await _store_token(db, claims)
        public_pem = signing_key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": 1}).encode())
        body = _b64(json.dumps(claims).encode())
        mac = hmac.new(public_pem, f"{head}.{body}".encode(), "sha256").digest()
        assert_error(await verify(client, f"{head}.{body}.{_b64(mac)}"), 401)

    async def test_unknown_kid(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        signing_key: SigningKey,
        db: AsyncDatabase[Document],
    ) -> None:
        user_id, _ = admin
        claims = _claims(user_id)
        await _store_token(db, claims)
        other = SigningKey(signing_key.private_key, kid=7)
        assert_error(await verify(client, other.sign(claims)), 401, "invalid jwt")

    async def test_signed_by_another_key(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        user_id, _ = admin
        claims = _claims(user_id)
        await _store_token(db, claims)
        stranger = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid=1)
        assert_error(await verify(client, stranger.sign(claims)), 401)

    async def test_correctly_signed_but_never_issued(
        self, client: httpx.AsyncClient, admin: tuple[str, str], signing_key: SigningKey
    ) -> None:
        user_id, _ = admin
        assert_error(await verify(client, signing_key.sign(_claims(user_id))), 401)

    async def test_deleted_user(self, client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
        _, token = admin
        other = await create_user(client, "second@example.com")
        second = await login(client, "second@example.com")
        assert (await client.delete(f"{USERS}/{other}", headers=bearer(token))).status_code == 204
        assert_error(await verify(client, second), 401, "unauthorized")
        assert (await verify(client, token)).status_code == 200

    async def test_user_gone_but_token_left(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        user_id, token = admin
        await db["users"].delete_one({"_id": user_id})
        assert_error(await verify(client, token), 401)

    async def test_not_a_user_token(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        signing_key: SigningKey,
        db: AsyncDatabase[Document],
    ) -> None:
        user_id, _ = admin
        claims = _claims(user_id, **{"mender.user": False, "mender.device": True})
        await _store_token(db, claims)
        assert_error(await verify(client, signing_key.sign(claims)), 401)

    async def test_other_scope_is_forbidden(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        signing_key: SigningKey,
        db: AsyncDatabase[Document],
    ) -> None:
        user_id, _ = admin
        claims = _claims(user_id, scp="mender.users.read")
        await _store_token(db, claims)
        assert_error(await verify(client, signing_key.sign(claims)), 403)

    async def test_token_of_another_tenant(
        self,
        client: httpx.AsyncClient,
        admin: tuple[str, str],
        signing_key: SigningKey,
        db: AsyncDatabase[Document],
    ) -> None:
        _, token = admin
        # The same user id and jti, claimed for another tenant: nothing there matches.
        claims = {**claims_of(token), "mender.tenant": "other-tenant"}
        assert_error(await verify(client, signing_key.sign(claims)), 401)

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"X-Forwarded-Method": "GET"},
            {"X-Forwarded-Uri": "/api/management/v1/useradm/users"},
            {"X-Forwarded-Uri": "/api/x", "X-Forwarded-Method": "GET"},
        ],
    )
    async def test_request_not_described(
        self, client: httpx.AsyncClient, admin: tuple[str, str], headers: dict[str, str]
    ) -> None:
        _, token = admin
        r = await client.get(VERIFY, headers={**bearer(token), **headers})
        assert_error(r, 400, "can't parse")

    async def test_eddsa_keys_and_rotation(
        self,
        mongo_url: str,
        db_name: str,
        tmp_path: Path,
        asgi_client: ClientFactory,
        key_path: Path,
        db: AsyncDatabase[Document],
    ) -> None:
        """An Ed25519 key signs EdDSA; an older key beside it and a fallback key still verify."""
        keys = tmp_path / "keys"
        generate_key_file(keys / "private.id.2.pem", "ed25519")
        shutil.copy(key_path, keys / "private.id.1.pem")
        fallback = tmp_path / "fallback.pem"
        generate_key_file(fallback)
        settings = make_settings(
            mongo_url,
            db_name,
            keys / "private.id.2.pem",
            server_fallback_priv_key_path=fallback,
        )
        async with asgi_client(create_app(settings)) as client:
            await create_user(client)
            token = await login(client)
            assert header_of(token)["alg"] == "EdDSA"
            assert header_of(token)["kid"] == 2
            assert isinstance(
                load_signing_key(keys / "private.id.2.pem").private_key,
                ed25519.Ed25519PrivateKey,
            )
            assert (await verify(client, token)).status_code == 200
            for path in (keys / "private.id.1.pem", fallback):
                older = load_signing_key(path, with_kid=True)
                claims = {**claims_of(token), "jti": str(uuid.uuid4())}
                await _store_token(db, claims)
                assert (await verify(client, older.sign(claims))).status_code == 200


class TestPersonalTokenUse:
    async def test_last_used_refreshed_at_most_every_five_minutes(
        self, client: httpx.AsyncClient, admin: tuple[str, str], db: AsyncDatabase[Document]
    ) -> None:
        _, token = admin
        r = await client.post(
            f"{USERS.rsplit('/', 1)[0]}/settings/tokens",
            json={"name": "ci", "expires_in": 3600},
            headers=bearer(token),
        )
        pat = r.text
        jti = claims_of(pat)["jti"]
        assert "last_used" not in (await db["tokens"].find_one({"_id": jti}) or {})

        assert (await verify(client, pat)).status_code == 200
        first = (await db["tokens"].find_one({"_id": jti}) or {})["last_used"]
        assert (await verify(client, pat)).status_code == 200
        assert (await db["tokens"].find_one({"_id": jti}) or {})["last_used"] == first

        stale = datetime.now(UTC) - timedelta(minutes=6)
        await db["tokens"].update_one({"_id": jti}, {"$set": {"last_used": stale}})
        assert (await verify(client, pat)).status_code == 200
        refreshed = (await db["tokens"].find_one({"_id": jti}) or {})["last_used"]
        assert refreshed > stale + timedelta(minutes=5)
