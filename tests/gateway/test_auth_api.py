"""Token checks through a real gateway, against issuer stubs that publish keys and revocations."""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from common.core.tokens import SigningKey
from tests.gateway.conftest import GatewayFactory, RunningGateway
from tests.gateway.stubs import (
    DEVICE_KEY,
    USER_KEY,
    IssuerControl,
    claims_of,
    make_token,
)
from tests.toolkit import ManualClock, assert_error, eventually

DEVICE_PATH = "/api/devices/v1/inventory/device/attributes"
USER_PATH = "/api/management/v1/useradm/users"
LOGOUT = "/api/management/v1/useradm/auth/logout"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


async def _passes(gw: RunningGateway, path: str, token: str) -> bool:
    """Whether the request reached the upstream (which describes it)."""
    r = await gw.client.get(path, headers=_bearer(token))
    if r.status_code == 200:
        assert r.json()["path"] == path
        return True
    return False


def _refused(gw: RunningGateway, token: str) -> Callable[[], Awaitable[httpx.Response | None]]:
    """A probe: the device route's answer once it refuses the token."""

    async def probe() -> httpx.Response | None:
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
        return r if r.status_code == 401 else None

    return probe


class TestMissingOrMalformed:
    async def test_missing_header(self, gw: RunningGateway, issuers: IssuerControl) -> None:
        for path in (DEVICE_PATH, USER_PATH):
            r = await gw.client.get(path)
            assert assert_error(r, 401) == "Authorization not present in header"

    async def test_empty_bearer(self, gw: RunningGateway) -> None:
        r = await gw.client.get(DEVICE_PATH, headers={"Authorization": "Bearer"})
        assert assert_error(r, 401) == "Authorization not present in header"

    async def test_basic_credentials_on_a_token_route(self, gw: RunningGateway) -> None:
        r = await gw.client.get(USER_PATH, auth=("admin@example.com", "secret-password"))
        assert assert_error(r, 401) == "Authorization not present in header"

    async def test_malformed_tokens(self, gw: RunningGateway, issuers: IssuerControl) -> None:
        good = make_token()
        header, payload, _ = good.split(".")
        for bad in ("garbage", "a.b", f"{header}.{payload}.", f"{header}.!!!.sig", "x" * 9000):
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(bad))
            assert assert_error(r, 401) == "malformed token"
        # Refused without a look at the issuers' keys.
        assert issuers.asked() == []


class TestDeviceTokens:
    """Checked as deviceauth checks them: 401 `token invalid`, 403 when expired."""

    async def test_good_token_passes(self, gw: RunningGateway, issuers: IssuerControl) -> None:
        token = make_token()
        r = await gw.client.put(
            f"{DEVICE_PATH}?a=1", headers={**_bearer(token), "X-MEN-RequestID": "req-123"}
        )
        assert r.status_code == 200
        forwarded = dict(r.json()["headers"])
        assert forwarded["authorization"] == f"Bearer {token}"
        assert forwarded["x-men-requestid"] == "req-123"
        # Checked locally: no round trip to the issuer.
        assert issuers.reads_of("keys") == []

    async def test_expired_is_forbidden(self, gw: RunningGateway) -> None:
        token = make_token(exp=int(time.time()) - 10)
        assert assert_error(await gw.client.get(DEVICE_PATH, headers=_bearer(token)), 403) == (
            "token expired"
        )

    async def test_signed_by_another_key(self, gw: RunningGateway) -> None:
        other = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        token = make_token(key=other)
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "token invalid"

    async def test_tampered_claims(self, gw: RunningGateway) -> None:
        header, _, signature = make_token().split(".")
        claims = claims_of(make_token())
        forged = f"{header}.{_b64({**claims, 'sub': str(uuid.uuid4())})}.{signature}"
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(forged))
        assert assert_error(r, 401) == "token invalid"

    async def test_alg_none_is_refused(self, gw: RunningGateway) -> None:
        claims = claims_of(make_token())
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "token invalid"

    async def test_hs256_with_the_public_key_is_refused(self, gw: RunningGateway) -> None:
        public = DEVICE_KEY.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        claims = claims_of(make_token())
        # PyJWT will not sign HS256 with a PEM key; the signature is computed by hand.
        head = _b64({"alg": "HS256", "typ": "JWT"})
        body = _b64(claims)
        mac = hmac.new(public, f"{head}.{body}".encode(), "sha256").digest()
        token = f"{head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "token invalid"

    async def test_user_token_is_not_a_device_token(self, gw: RunningGateway) -> None:
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(make_token(device=False)))
        assert assert_error(r, 401) == "not a device token"

    async def test_device_claim_signed_by_useradm(self, gw: RunningGateway) -> None:
        # The other issuer's key does not make a device token.
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(make_token(key=USER_KEY)))
        assert assert_error(r, 401) == "token invalid"

    async def test_missing_claims(self, gw: RunningGateway) -> None:
        token = DEVICE_KEY.sign({"sub": "d", "exp": int(time.time()) + 60, "mender.device": True})
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "token invalid"


class TestUserTokens:
    """Checked as useradm checks them: 401 `invalid jwt`/`unauthorized`, 403 for the scope."""

    async def test_good_token_passes(self, gw: RunningGateway) -> None:
        assert await _passes(gw, USER_PATH, make_token(device=False))

    async def test_without_expiry_passes(self, gw: RunningGateway) -> None:
        token = USER_KEY.sign(
            {k: v for k, v in claims_of(make_token(device=False)).items() if k != "exp"}
        )
        assert await _passes(gw, USER_PATH, token)

    async def test_expired(self, gw: RunningGateway) -> None:
        token = make_token(device=False, exp=int(time.time()) - 10)
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "token expired"

    async def test_device_token_on_a_management_route(self, gw: RunningGateway) -> None:
        r = await gw.client.get(USER_PATH, headers=_bearer(make_token()))
        assert assert_error(r, 401) == "invalid jwt"

    async def test_not_a_user_token(self, gw: RunningGateway) -> None:
        token = make_token(device=False, extra={"mender.user": False})
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "unauthorized"

    async def test_wrong_scope(self, gw: RunningGateway) -> None:
        token = make_token(device=False, extra={"scp": "mender.read"})
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert assert_error(r, 403) == "forbidden: the token's scope does not allow this request"

    async def test_not_yet_valid(self, gw: RunningGateway) -> None:
        token = make_token(device=False, extra={"nbf": int(time.time()) + 600})
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "invalid jwt"

    async def test_jwt_cookie_on_management_routes(self, gw: RunningGateway) -> None:
        token = make_token(device=False)
        r = await gw.client.get(USER_PATH, headers={"Cookie": f"JWT={token}"})
        assert r.status_code == 200
        forwarded = dict(r.json()["headers"])
        assert forwarded["authorization"] == f"Bearer {token}"

    async def test_jwt_cookie_is_not_a_device_credential(self, gw: RunningGateway) -> None:
        r = await gw.client.get(DEVICE_PATH, headers={"Cookie": f"JWT={make_token()}"})
        assert assert_error(r, 401) == "Authorization not present in header"

    async def test_public_routes_need_no_token(self, gw: RunningGateway) -> None:
        r = await gw.client.post("/api/management/v1/useradm/auth/login")
        assert r.status_code == 200
        assert r.json()["path"] == "/api/management/v1/useradm/auth/login"


class TestKeyRotation:
    async def test_unknown_key_id_refetches_once(
        self, gateway_factory: GatewayFactory, issuers: IssuerControl
    ) -> None:
        rotated = SigningKey(ed25519.Ed25519PrivateKey.generate(), kid=7)
        async with gateway_factory(key_refetch_interval=60) as gw:
            assert issuers.reads_of("keys") == ["keys", "keys"]  # both issuers, at start
            issuers.keys["useradm"] = [USER_KEY, rotated]
            token = make_token(device=False, key=rotated)
            assert await _passes(gw, USER_PATH, token)
            assert len(issuers.reads_of("keys")) == 3
            # A token of a key the issuer does not have either: refused, and within the
            # interval the keys are not asked for again.
            stranger = SigningKey(ed25519.Ed25519PrivateKey.generate(), kid=8)
            for _ in range(3):
                r = await gw.client.get(
                    USER_PATH, headers=_bearer(make_token(device=False, key=stranger))
                )
                assert assert_error(r, 401) == "invalid jwt"
            assert len(issuers.reads_of("keys")) == 3

    async def test_device_key_rotation(
        self, gateway_factory: GatewayFactory, issuers: IssuerControl
    ) -> None:
        # Device tokens name no key: a signature no known key verifies is the hint.
        new = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        async with gateway_factory() as gw:
            issuers.keys["deviceauth"] = [new, DEVICE_KEY]
            assert await _passes(gw, DEVICE_PATH, make_token(key=new))
            assert await _passes(gw, DEVICE_PATH, make_token())


class TestRevocation:
    async def test_revoked_device_token(self, gw: RunningGateway, issuers: IssuerControl) -> None:
        token, bystander = make_token(), make_token()
        assert await _passes(gw, DEVICE_PATH, token)
        issuers.revoke("deviceauth", f"jti:{claims_of(token)['jti']}")

        r = await eventually(_refused(gw, token), within=1.0, what="the revoked token refused")
        assert assert_error(r, 401) == "token invalid"
        assert await _passes(gw, DEVICE_PATH, bystander)

    async def test_token_issued_after_the_revocation_passes(
        self, gw: RunningGateway, issuers: IssuerControl
    ) -> None:
        # A device authenticating again gets a token with the same id, issued later.
        jti, now = str(uuid.uuid4()), int(time.time())
        old = make_token(extra={"jti": jti, "iat": now - 5})
        seq = issuers.revoke("deviceauth", f"jti:{jti}", not_before=now)
        await gw.app.issuer("deviceauth").catch_up(seq)
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(old))
        assert assert_error(r, 401) == "token invalid"
        assert await _passes(gw, DEVICE_PATH, make_token(extra={"jti": jti, "iat": now}))

    async def test_tenant_revocation(self, gw: RunningGateway, issuers: IssuerControl) -> None:
        tenant = uuid.uuid4().hex
        token = make_token(extra={"mender.tenant": tenant})
        other_tenant = make_token(extra={"mender.tenant": uuid.uuid4().hex})
        seq = issuers.revoke("deviceauth", f"tenant:{tenant}")
        await gw.app.issuer("deviceauth").catch_up(seq)
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "token invalid"
        assert await _passes(gw, DEVICE_PATH, other_tenant)

    async def test_revoked_user_token(self, gw: RunningGateway, issuers: IssuerControl) -> None:
        token = make_token(device=False)
        seq = issuers.revoke("useradm", f"jti:{claims_of(token)['jti']}")
        await gw.app.issuer("useradm").catch_up(seq)
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "unauthorized"

    async def test_change_through_the_gateway_applies_before_the_answer(
        self, gw: RunningGateway, issuers: IssuerControl
    ) -> None:
        device_token, admin = make_token(), make_token(device=False)
        jti = claims_of(device_token)["jti"]
        assert await _passes(gw, DEVICE_PATH, device_token)
        r = await gw.client.delete(
            f"/api/management/v2/devauth/tokens/{jti}",
            params={"revoke": f"jti:{jti}", "status": "202"},
            headers=_bearer(admin),
        )
        assert r.status_code == 202
        # Between the issuer and the gateway: not relayed.
        assert "x-fleetport-revocations" not in r.headers
        # Refused by the very next request, without waiting for the feed.
        r = await gw.client.get(DEVICE_PATH, headers=_bearer(device_token))
        assert assert_error(r, 401) == "token invalid"

    async def test_logout_applies_before_the_answer(
        self, gw: RunningGateway, issuers: IssuerControl
    ) -> None:
        token = make_token(device=False)
        r = await gw.client.post(
            LOGOUT, params={"revoke": f"jti:{claims_of(token)['jti']}"}, headers=_bearer(token)
        )
        assert r.status_code == 200
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert assert_error(r, 401) == "unauthorized"

    async def test_a_gateway_started_later_loads_them(
        self, gateway_factory: GatewayFactory, issuers: IssuerControl
    ) -> None:
        token = make_token()
        issuers.revoke("deviceauth", f"jti:{claims_of(token)['jti']}")
        async with gateway_factory() as gw:
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
            assert assert_error(r, 401) == "token invalid"

    async def test_issuer_in_trouble_keeps_what_is_known(
        self, gateway_factory: GatewayFactory, issuers: IssuerControl
    ) -> None:
        token = make_token()
        async with gateway_factory() as gw:
            issuers.failing = 503
            # Checks go on with the keys and revocations already read.
            assert await _passes(gw, DEVICE_PATH, token)
            issuers.failing = None
            issuers.revoke("deviceauth", f"jti:{claims_of(token)['jti']}")

            # The follower retries after a failed read and catches up by itself.
            r = await eventually(_refused(gw, token), within=3.0, what="the revocation applied")
            assert assert_error(r, 401) == "token invalid"


class TestUseReports:
    async def test_tokens_let_through_are_reported_once_a_minute(
        self, gateway_factory: GatewayFactory, issuers: IssuerControl
    ) -> None:
        device, user = make_token(extra={"mender.tenant": "t1"}), make_token(device=False)
        async with gateway_factory(token_use_report_interval=0.05) as gw:
            for _ in range(3):
                assert await _passes(gw, DEVICE_PATH, device)
                assert await _passes(gw, USER_PATH, user)
            refused = make_token(exp=1)
            assert (await gw.client.get(DEVICE_PATH, headers=_bearer(refused))).status_code == 403

            def reported(issuer: str, token: str) -> list[dict[str, str]] | None:
                jti = claims_of(token)["jti"]
                found = [u for u in issuers.used.get(issuer, []) if u["jti"] == jti]
                return found or None

            [use] = await eventually(lambda: reported("deviceauth", device), within=5)
            assert use == {"tenant_id": "t1", "sub": claims_of(device)["sub"], "jti": use["jti"]}
            [use] = await eventually(lambda: reported("useradm", user), within=5)
            assert use["sub"] == claims_of(user)["sub"]
            assert reported("deviceauth", refused) is None


class TestSignatureCache:
    async def test_expiry_is_checked_on_every_request(
        self, gateway_factory: GatewayFactory, issuers: IssuerControl
    ) -> None:
        clock = ManualClock()
        token = make_token(exp=int(clock.time()) + 60)
        async with gateway_factory(clock=clock) as gw:
            assert await _passes(gw, DEVICE_PATH, token)
            clock.advance(61)
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
            assert assert_error(r, 403) == "token expired"

    async def test_bounded(self, gateway_factory: GatewayFactory) -> None:
        async with gateway_factory(token_cache_size=2) as gw:
            tokens = [make_token() for _ in range(4)]
            for token in tokens:
                assert await _passes(gw, DEVICE_PATH, token)
            assert gw.app.gate.remembered == 2
            # Forgotten ones are simply checked again.
            assert await _passes(gw, DEVICE_PATH, tokens[0])


class TestRateLimit:
    async def test_per_client_limit(self, gateway_factory: GatewayFactory) -> None:
        async with gateway_factory(rate_limit_per_second=0.5, rate_limit_burst=2) as gw:
            login = "/api/management/v1/useradm/auth/login"
            assert (await gw.client.post(login)).status_code == 200
            assert (await gw.client.post(login)).status_code == 200
            r = await gw.client.post(login)
            assert assert_error(r, 429) == "too many requests"
            assert r.headers["retry-after"] == "2"
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(make_token()))
            assert assert_error(r, 429) == "too many requests"
            assert (await gw.client.get("/status")).status_code == 204
